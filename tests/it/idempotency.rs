//! `Idempotency-Key` storage on real Postgres: replays, mismatched reuse,
//! concurrent duplicates and failed writes. (Endpoint-level tests live with
//! the endpoints that use it.)

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use refbackend::error::AppError;
use refbackend::http::idempotency::{self, Guard, IdempotencyKey, Outcome};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::support::{TestApp, TestAppBuilder};

async fn setup() -> (TestApp, PgPool, Uuid) {
    setup_with(TestApp::builder()).await
}

async fn setup_with(builder: TestAppBuilder) -> (TestApp, PgPool, Uuid) {
    let app = builder.without_replica().unseeded().start().await;
    let pool = app.state.db.write().clone();
    let user = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, display_name)
         VALUES ($1, $2, 'not-a-hash', 'Idem Potent')",
    )
    .bind(user)
    .bind(format!("{user}@example.com"))
    .execute(&pool)
    .await
    .expect("user");
    sqlx::query("CREATE TABLE writes (id serial PRIMARY KEY, note text NOT NULL)")
        .execute(&pool)
        .await
        .expect("scratch table");
    (app, pool, user)
}

fn key(raw: &'static str) -> IdempotencyKey {
    IdempotencyKey::parse(&axum::http::HeaderValue::from_static(raw)).expect("key")
}

async fn guarded_insert(
    pool: &PgPool,
    user: Uuid,
    key: &IdempotencyKey,
    note: &str,
) -> Result<Outcome<serde_json::Value>, AppError> {
    let fingerprint = idempotency::fingerprint("POST", "/writes", &note).expect("hash");
    let guard = Guard {
        user_id: user,
        key,
        fingerprint,
    };
    let note = note.to_owned();
    idempotency::transaction(pool, Some(guard), StatusCode::CREATED, async move |tx| {
        let id: i32 = sqlx::query_scalar("INSERT INTO writes (note) VALUES ($1) RETURNING id")
            .bind(&note)
            .fetch_one(&mut *tx)
            .await?;
        // Long enough for a concurrent duplicate to arrive while this runs.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        Ok(serde_json::json!({ "id": id, "note": note }))
    })
    .await
}

async fn count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM writes")
        .fetch_one(pool)
        .await
        .expect("count")
}

async fn body_of(outcome: Outcome<serde_json::Value>) -> (StatusCode, bool, Vec<u8>) {
    let response = outcome.into_response();
    let status = response.status();
    let replayed = response.headers().contains_key("idempotent-replayed");
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, replayed, body.to_vec())
}

#[tokio::test]
async fn a_retry_with_the_same_key_replays_the_first_response_and_writes_nothing() {
    let (app, pool, user) = setup().await;
    let k = key("retry-1");
    let first = body_of(
        guarded_insert(&pool, user, &k, "hello")
            .await
            .expect("first"),
    )
    .await;
    let second = body_of(
        guarded_insert(&pool, user, &k, "hello")
            .await
            .expect("retry"),
    )
    .await;
    assert_eq!(first.0, StatusCode::CREATED);
    assert!(!first.1);
    assert_eq!(second.0, StatusCode::CREATED);
    assert!(second.1, "marked as a replay");
    assert_eq!(first.2, second.2, "verbatim");
    assert_eq!(count(&pool).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn the_same_key_with_a_different_request_is_a_422() {
    let (app, pool, user) = setup().await;
    let k = key("reuse-1");
    guarded_insert(&pool, user, &k, "one").await.expect("first");
    let err = guarded_insert(&pool, user, &k, "two")
        .await
        .err()
        .expect("mismatch refused");
    assert!(matches!(err, AppError::Validation(_)), "{err:?}");
    assert_eq!(count(&pool).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn keys_belong_to_one_user() {
    let (app, pool, user) = setup().await;
    let other = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, display_name)
         VALUES ($1, $2, 'not-a-hash', 'Someone Else')",
    )
    .bind(other)
    .bind(format!("{other}@example.com"))
    .execute(&pool)
    .await
    .expect("user");
    let k = key("shared-name");
    guarded_insert(&pool, user, &k, "mine").await.expect("mine");
    let theirs = body_of(
        guarded_insert(&pool, other, &k, "mine")
            .await
            .expect("theirs"),
    )
    .await;
    assert!(!theirs.1, "another user's key is not a replay");
    assert_eq!(count(&pool).await, 2);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_duplicates_write_once_and_both_get_the_same_response() {
    let (app, pool, user) = setup().await;
    let k = key("race-1");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let pool = pool.clone();
            let k = k.clone();
            tokio::spawn(async move { guarded_insert(&pool, user, &k, "race").await })
        })
        .collect();
    let mut bodies = Vec::new();
    let mut fresh = 0;
    for task in tasks {
        let outcome = task.await.expect("task").expect("no error");
        let (status, replayed, body) = body_of(outcome).await;
        assert_eq!(status, StatusCode::CREATED);
        fresh += usize::from(!replayed);
        bodies.push(body);
    }
    assert_eq!(fresh, 1, "exactly one request did the write");
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "all saw one response"
    );
    assert_eq!(count(&pool).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_failed_write_stores_nothing_so_the_key_can_be_retried() {
    let (app, pool, user) = setup().await;
    let k = key("fails-first");
    let fingerprint = idempotency::fingerprint("POST", "/writes", &"x").expect("hash");
    let failed = idempotency::transaction(
        &pool,
        Some(Guard {
            user_id: user,
            key: &k,
            fingerprint,
        }),
        StatusCode::CREATED,
        async |tx| {
            sqlx::query("INSERT INTO writes (note) VALUES ('half')")
                .execute(&mut *tx)
                .await?;
            Err::<serde_json::Value, _>(AppError::Conflict("no".into()))
        },
    )
    .await;
    assert!(failed.is_err());
    assert_eq!(count(&pool).await, 0, "rolled back");
    let retried = body_of(guarded_insert(&pool, user, &k, "x").await.expect("retry")).await;
    assert!(!retried.1, "the retry really ran");
    assert_eq!(count(&pool).await, 1);
    app.stop().await;
}

/// Another session holding the row lock of `writes` row `id` (a hot row)
/// until it commits or rolls back.
async fn lock_row(pool: &PgPool, id: i32) -> Transaction<'static, Postgres> {
    let mut holder = pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM writes WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *holder)
        .await
        .expect("lock the row");
    holder
}

/// Waits until a session of this database is blocked on a lock.
async fn wait_for_a_lock_waiter(pool: &PgPool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .expect("pg_stat_activity");
        if waiting > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nobody waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A guarded write that updates `writes` row `id`; `lock_timeout`, when
/// given, is set by the write itself (a lock timeout outside the key claim).
async fn guarded_update(
    pool: &PgPool,
    user: Uuid,
    key: &IdempotencyKey,
    id: i32,
    lock_timeout: Option<&'static str>,
) -> Result<Outcome<serde_json::Value>, AppError> {
    let fingerprint = idempotency::fingerprint("PUT", &format!("/writes/{id}"), &id).expect("hash");
    let guard = Guard {
        user_id: user,
        key,
        fingerprint,
    };
    idempotency::transaction(pool, Some(guard), StatusCode::OK, async move |tx| {
        if let Some(timeout) = lock_timeout {
            sqlx::query("SELECT set_config('lock_timeout', $1, true)")
                .bind(timeout)
                .execute(&mut *tx)
                .await?;
        }
        let note: String =
            sqlx::query_scalar("UPDATE writes SET note = 'updated' WHERE id = $1 RETURNING note")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        Ok(serde_json::json!({ "id": id, "note": note }))
    })
    .await
}

async fn insert_hot_row(pool: &PgPool) -> i32 {
    sqlx::query_scalar("INSERT INTO writes (note) VALUES ('hot') RETURNING id")
        .fetch_one(pool)
        .await
        .expect("row")
}

/// The key claim bounds its wait for an in-flight duplicate (then 409); that
/// bound must not outlive the claim. A guarded write that then waits on a
/// busy row longer than it (5 s) used to fail with lock_not_available, a 500.
#[tokio::test]
async fn a_guarded_write_may_wait_on_a_busy_row_longer_than_the_key_claims_bound() {
    // Only a lock timeout could end the wait within this test.
    let (app, pool, user) =
        setup_with(TestApp::builder().env("DB_POOL_STATEMENT_TIMEOUT", "60s")).await;
    let id = insert_hot_row(&pool).await;
    let holder = lock_row(&pool, id).await;
    let k = key("busy-row");
    let write = {
        let (pool, k) = (pool.clone(), k.clone());
        tokio::spawn(async move { guarded_update(&pool, user, &k, id, None).await })
    };
    wait_for_a_lock_waiter(&pool).await;
    let claim_bound = Duration::from_secs(5);
    assert_eq!(idempotency::IN_FLIGHT_WAIT, "5s");
    tokio::time::sleep(claim_bound + Duration::from_millis(500)).await;
    holder.commit().await.expect("release the row");
    let outcome = write
        .await
        .expect("task")
        .expect("the write waited for the row and succeeded");
    let (status, replayed, body) = body_of(outcome).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!replayed);
    let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["note"], "updated");
    app.stop().await;
}

/// The problem a client gets for `error`: (status, content type, Retry-After).
fn rendered(error: AppError) -> (StatusCode, String, Option<String>) {
    let response = error.into_response();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    (
        response.status(),
        header("content-type").unwrap_or_default(),
        header("retry-after"),
    )
}

/// A write that cannot get a busy row in time — the statement timeout, or a
/// lock timeout the write set itself — is a 503 with Retry-After (try again),
/// never a 500, and stores nothing under its key.
#[tokio::test]
async fn a_lock_or_statement_timeout_in_a_guarded_write_is_a_503_with_retry_after() {
    let (app, pool, user) =
        setup_with(TestApp::builder().env("DB_POOL_STATEMENT_TIMEOUT", "1s")).await;
    let id = insert_hot_row(&pool).await;
    let holder = lock_row(&pool, id).await;

    let by_statement_timeout = key("statement-timeout");
    let by_lock_timeout = key("lock-timeout");
    for (k, lock_timeout, sqlstate) in [
        (&by_statement_timeout, None, "57014"),
        (&by_lock_timeout, Some("100ms"), "55P03"),
    ] {
        let error = guarded_update(&pool, user, k, id, lock_timeout)
            .await
            .err()
            .expect("the row stays busy");
        let code = match &error {
            AppError::Database(e) => e
                .as_database_error()
                .and_then(|d| d.code())
                .map(|c| c.into_owned()),
            _ => None,
        };
        assert_eq!(code.as_deref(), Some(sqlstate), "{error:?}");
        let (status, content_type, retry_after) = rendered(error);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{sqlstate}");
        assert_eq!(content_type, "application/problem+json", "{sqlstate}");
        assert!(retry_after.is_some(), "{sqlstate}: Retry-After");
    }
    holder.rollback().await.expect("release the row");

    for k in [&by_statement_timeout, &by_lock_timeout] {
        let retried = body_of(
            guarded_update(&pool, user, k, id, None)
                .await
                .expect("retry"),
        )
        .await;
        assert_eq!(retried.0, StatusCode::OK);
        assert!(!retried.1, "nothing was stored by the refused attempt");
    }
    app.stop().await;
}

/// The same at the HTTP level: a vote on a question whose row another
/// transaction holds past the statement timeout answers 503 problem+json with
/// Retry-After, and the client's retry with the same key then counts once.
#[tokio::test]
async fn a_vote_on_a_question_locked_past_the_statement_timeout_is_a_503_then_its_retry_counts() {
    let app = TestApp::builder()
        .without_replica()
        .env("DB_POOL_STATEMENT_TIMEOUT", "1s")
        .env("RATE_LIMIT_VOTES_USER", "100000/1h")
        .start()
        .await;
    let pool = app.state.db.write().clone();
    let (user, token) = app
        .users_with_role(1, "member")
        .await
        .pop()
        .expect("one user");
    let response = app
        .client
        .post(app.url("/api/v1/cities/1/questions"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"body": "Will the library open on Sundays next year?"}))
        .send()
        .await
        .expect("ask");
    assert_eq!(response.status(), 201);
    let created: serde_json::Value = response.json().await.expect("json");
    let question = created["question"]["id"].as_str().expect("id").to_owned();

    let mut holder = pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM questions WHERE id = $1::uuid FOR UPDATE")
        .bind(&question)
        .execute(&mut *holder)
        .await
        .expect("lock the question");
    let vote = || {
        app.client
            .put(app.url(&format!("/api/v1/questions/{question}/vote")))
            .bearer_auth(&token)
            .header("idempotency-key", "vote-on-a-busy-question")
            .json(&serde_json::json!({"value": 1}))
            .send()
    };
    let refused = vote().await.expect("vote");
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    assert!(refused.headers().contains_key("retry-after"));
    holder.rollback().await.expect("release");

    let retried = vote().await.expect("retry");
    assert_eq!(retried.status(), 200);
    assert!(!retried.headers().contains_key("idempotent-replayed"));
    let votes: i64 = sqlx::query_scalar("SELECT count(*) FROM question_votes WHERE user_id = $1")
        .bind(user)
        .fetch_one(&pool)
        .await
        .expect("votes");
    assert_eq!(votes, 1);
    app.stop().await;
}
