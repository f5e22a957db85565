//! Backups are only real once restored: dump a live database with
//! `scripts/db-backup`, restore it into a fresh one, compare every table, and
//! run the service on the copy.

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;

use crate::services::services;
use crate::support::TestApp;

fn db_backup(args: &[&str]) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(root.join("scripts/db-backup"))
        .args(args)
        .current_dir(&root)
        .output()
        .expect("run scripts/db-backup");
    assert!(
        output.status.success(),
        "db-backup {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

const TABLES: &[&str] = &[
    "_sqlx_migrations",
    "cities",
    "users",
    "refresh_families",
    "refresh_tokens",
    "exercises",
    "attempts",
    "review_cards",
    "user_progress",
    "user_skill_stats",
    "idempotency_keys",
    "questions",
    "question_votes",
];

async fn counts(url: &str) -> Vec<(String, i64)> {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    let mut out = Vec::new();
    for table in TABLES {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&pool)
                .await
                .expect("count");
        out.push(((*table).to_owned(), n));
    }
    pool.close().await;
    out
}

#[tokio::test]
async fn a_backup_restores_into_a_fresh_database_and_the_service_runs_on_it() {
    let app = TestApp::builder().without_replica().start().await;
    let (_, token) = app.register_member("backup@example.com").await;
    let (exercise, answer): (i64, String) =
        sqlx::query_as("SELECT id, answer FROM exercises ORDER BY id LIMIT 1")
            .fetch_one(app.state.db.write())
            .await
            .expect("exercise");
    let attempt = app
        .client
        .post(app.url(&format!("/api/v1/exercises/{exercise}/attempts")))
        .bearer_auth(&token)
        .header("idempotency-key", "backup-1")
        .json(&json!({"answer": answer}))
        .send()
        .await
        .expect("attempt");
    assert_eq!(attempt.status(), 201);
    let question = app
        .client
        .post(app.url("/api/v1/cities/1/questions"))
        .bearer_auth(&token)
        .json(&json!({"body": "Is the backup of city hall tested too?"}))
        .send()
        .await
        .expect("question");
    assert_eq!(question.status(), 201);
    let before = counts(&app.db.primary_url).await;

    let file = std::env::temp_dir().join(format!("refbackend-backup-{}.dump", app.db.name));
    let file_str = file.to_str().expect("utf-8 path");
    db_backup(&["dump", &app.db.primary_url, file_str]);
    let fresh = services().create_empty_database().await;
    db_backup(&["restore", &fresh.primary_url, file_str]);

    assert_eq!(
        counts(&fresh.primary_url).await,
        before,
        "every table, every row"
    );

    // The service starts on the copy (migrations up to date) and serves the
    // learner's data with the same tokens.
    let restored = TestApp::builder()
        .without_replica()
        .unseeded()
        .env("MIGRATE_ON_START", "true")
        .start_on(fresh)
        .await;
    let progress: serde_json::Value = restored
        .client
        .get(restored.url("/api/v1/users/me/progress"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("progress")
        .json()
        .await
        .expect("json");
    assert_eq!(progress["attempts"], 1, "{progress}");
    let (status, page) = restored
        .get_json("/api/v1/cities/1/questions?sort=new")
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));

    // Restoring over a database that has tables is refused.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let refused = Command::new(root.join("scripts/db-backup"))
        .args(["restore", &app.db.primary_url, file_str])
        .output()
        .expect("run");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not empty"));
    let _ = std::fs::remove_file(&file);
    restored.stop().await;
    app.stop().await;
}
