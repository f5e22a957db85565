//! `Idempotency-Key` storage on real Postgres: replays, mismatched reuse,
//! concurrent duplicates and failed writes. (Endpoint-level tests live with
//! the endpoints that use it.)

use axum::http::StatusCode;
use refbackend::error::AppError;
use refbackend::http::idempotency::{self, Guard, IdempotencyKey, Outcome};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::TestApp;

async fn setup() -> (TestApp, PgPool, Uuid) {
    let app = TestApp::builder()
        .without_replica()
        .unseeded()
        .start()
        .await;
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
