//! Read/write routing between the primary and a real streaming replica, and
//! what happens when the replica stops, restarts or falls behind.

use std::time::Duration;

use refbackend::db::consistency::Lsn;

use crate::services::services;
use crate::support::{TestApp, TestAppBuilder};

/// How long a stopped or paused replica may take to rejoin the rotation: it
/// replays all its primary wrote meanwhile, on a loaded 2-core CI box.
const REJOIN: Duration = Duration::from_secs(90);

/// These tests are about where reads go, so every read must reach the
/// database: the cache is off.
fn uncached() -> TestAppBuilder {
    TestApp::builder().env("CACHE_ENABLED", "false")
}

fn replica_in_rotation(body: &serde_json::Value) -> Option<bool> {
    body["dependencies"]["replicas"][0]["in_rotation"].as_bool()
}

#[tokio::test]
async fn public_reads_are_served_by_the_replica() {
    let app = uncached().start().await;
    let (status, body) = app.get_json("/api/v1/cities?limit=5").await;
    assert_eq!(status, 200);
    assert_eq!(body["items"].as_array().map(Vec::len), Some(5));
    assert_eq!(
        app.metric("db_reads_total", &[("pool", "replica-0")]).await,
        1.0
    );
    assert_eq!(
        app.metric("db_reads_total", &[("pool", "primary")]).await,
        0.0
    );

    // And the read path really is a standby, not the primary under another name.
    let in_recovery = app
        .state
        .db
        .read(|pool| async move {
            sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()")
                .fetch_one(&pool)
                .await
        })
        .await
        .expect("read");
    assert!(in_recovery);
    app.stop().await;
}

#[tokio::test]
async fn a_write_on_the_read_path_is_rejected() {
    let app = uncached().start().await;
    let err = app
        .state
        .db
        .read(|pool| async move {
            sqlx::query("UPDATE cities SET population = 0")
                .execute(&pool)
                .await
        })
        .await
        .expect_err("writes must fail on the read path");
    let code = err
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    // 25006 read_only_sql_transaction
    assert_eq!(code.as_deref(), Some("25006"), "{err}");
    // Nothing changed on the primary.
    let zeroed: i64 = sqlx::query_scalar("SELECT count(*) FROM cities WHERE population = 0")
        .fetch_one(app.state.db.write())
        .await
        .expect("count");
    assert_eq!(zeroed, 0);
    app.stop().await;
}

#[tokio::test]
async fn without_replicas_reads_go_to_the_primary_and_count_no_fallback() {
    let app = uncached().without_replica().start().await;
    let (status, _) = app.get_json("/api/v1/cities").await;
    assert_eq!(status, 200);
    assert_eq!(
        app.metric("db_reads_total", &[("pool", "primary")]).await,
        1.0
    );
    assert_eq!(app.metric("db_read_fallbacks_total", &[]).await, 0.0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_keep_succeeding_when_the_replica_stops_and_return_to_it_when_it_restarts() {
    let pair = services().replicated_pair().await;
    let replica = &pair.replica;
    let app = uncached().start_on(pair.db.clone()).await;
    app.wait_for_ready("replica in rotation", Duration::from_secs(10), |b| {
        replica_in_rotation(b) == Some(true)
    })
    .await;
    let (status, _) = app.get_json("/api/v1/cities").await;
    assert_eq!(status, 200);
    assert_eq!(
        app.metric("db_reads_total", &[("pool", "replica-0")]).await,
        1.0
    );

    tokio::task::block_in_place(|| replica.stop());

    // Every read succeeds: the first may hit the dead connection and be retried
    // on the primary; the rest go straight to the primary.
    for _ in 0..20 {
        let (status, body) = app.get_json("/api/v1/cities?limit=3").await;
        assert_eq!(status, 200, "{body}");
    }
    // Out of rotation *and* seen down: on a loaded box a check can find the
    // replica still answering but lagging while it shuts down, which takes
    // it out of rotation one check earlier.
    let body = app
        .wait_for_ready(
            "replica out of rotation and down",
            Duration::from_secs(10),
            |b| {
                replica_in_rotation(b) == Some(false)
                    && b["dependencies"]["replicas"][0]["status"] == "down"
            },
        )
        .await;
    assert_eq!(body["status"], "degraded");
    assert!(app.metric("db_read_fallbacks_total", &[]).await >= 1.0);

    tokio::task::block_in_place(|| replica.start());
    // A restarted replica replays everything its primary wrote while it was
    // down: on a loaded CI box that takes a while. What is tested is that it
    // comes back, and that the app then reports itself ready.
    app.wait_for_ready("replica back in rotation, app ready", REJOIN, |b| {
        replica_in_rotation(b) == Some(true) && b["status"] == "ready"
    })
    .await;
    let before = app.metric("db_reads_total", &[("pool", "replica-0")]).await;
    let (status, _) = app.get_json("/api/v1/cities").await;
    assert_eq!(status, 200);
    assert_eq!(
        app.metric("db_reads_total", &[("pool", "replica-0")]).await,
        before + 1.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_replay_is_paused_past_the_lag_bound_leaves_the_rotation() {
    let pair = services().replicated_pair().await;
    let replica = &pair.replica;
    let app = uncached()
        .env("DB_REPLICA_MAX_LAG", "1s")
        .start_on(pair.db.clone())
        .await;
    app.wait_for_ready("replica in rotation", Duration::from_secs(10), |b| {
        replica_in_rotation(b) == Some(true)
    })
    .await;

    let replica_pool = sqlx::PgPool::connect(&replica.url(&app.db.name))
        .await
        .expect("replica connect");
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&replica_pool)
        .await
        .expect("pause replay");
    // Keep committing on the primary so the replica falls further behind.
    let primary = app.state.db.write().clone();
    let writer = tokio::spawn(async move {
        loop {
            let _ =
                sqlx::query("UPDATE cities SET population = population WHERE slug = 'austin-tx'")
                    .execute(&primary)
                    .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let body = app
        .wait_for_ready(
            "lagging replica out of rotation",
            Duration::from_secs(15),
            |b| replica_in_rotation(b) == Some(false),
        )
        .await;
    let replica_report = &body["dependencies"]["replicas"][0];
    assert_eq!(replica_report["status"], "up", "reachable, just behind");
    assert_eq!(replica_report["replay_paused"], true);
    // Past the 1 s bound; the report rounds to the millisecond, so a lag of
    // 1.0004 s reads 1.0.
    assert!(
        replica_report["lag_seconds"]
            .as_f64()
            .unwrap_or(f64::INFINITY)
            >= 1.0,
        "{body}"
    );
    assert_eq!(body["status"], "degraded");

    // Reads now go to the primary, counted as fallbacks.
    let fallbacks = app
        .metric(
            "db_read_fallbacks_total",
            &[("reason", "no_replica_in_rotation")],
        )
        .await;
    let (status, _) = app.get_json("/api/v1/cities").await;
    assert_eq!(status, 200);
    assert_eq!(
        app.metric(
            "db_read_fallbacks_total",
            &[("reason", "no_replica_in_rotation")]
        )
        .await,
        fallbacks + 1.0
    );

    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&replica_pool)
        .await
        .expect("resume replay");
    app.wait_for_ready("replica back after resume", REJOIN, |b| {
        replica_in_rotation(b) == Some(true)
    })
    .await;
    writer.abort();
    replica_pool.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_replica_connection_breaks_is_retried_once_on_the_primary() {
    let pair = services().replicated_pair().await;
    let replica = &pair.replica;
    // Health checks far apart: the replica is still "in rotation" when it dies,
    // so the read really goes there first.
    let app = uncached()
        .env("HEALTH_CHECK_INTERVAL", "60s")
        .start_on(pair.db.clone())
        .await;
    // The start-up check can sample the replica while it still replays the
    // seeding, which keeps it out of rotation until the next check, a minute
    // away: check again (as the interval would) until it is in.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !app.state.db.replicas()[0].in_rotation() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica never caught up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.state.db.check_health().await;
    }
    let (status, _) = app.get_json("/api/v1/cities?limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(
        app.metric("db_reads_total", &[("pool", "replica-0")]).await,
        1.0
    );

    tokio::task::block_in_place(|| replica.stop());
    let (status, body) = app.get_json("/api/v1/cities?limit=1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        app.metric("db_reads_total", &[("pool", "replica-0")]).await,
        2.0
    );
    assert_eq!(
        app.metric("db_read_fallbacks_total", &[("reason", "replica_error")])
            .await,
        1.0
    );
    assert_eq!(
        app.metric("db_reads_total", &[("pool", "primary")]).await,
        1.0
    );
    // The broken replica left the rotation at once: the next read goes straight
    // to the primary without trying it again.
    let (status, _) = app.get_json("/api/v1/cities?limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(
        app.metric("db_reads_total", &[("pool", "replica-0")]).await,
        2.0
    );
    assert_eq!(
        app.metric(
            "db_read_fallbacks_total",
            &[("reason", "no_replica_in_rotation")]
        )
        .await,
        1.0
    );
    app.stop().await;
}

/// With `synchronous_commit = off` (the harness runs so, and it is a common
/// tuning) COMMIT returns before its WAL is written out. A consistency token
/// taken from the *write* position can then sit before the commit record, and
/// a replica paused there would pass for "caught up" while missing the write.
#[tokio::test]
async fn a_write_token_covers_a_commit_whose_wal_is_not_yet_flushed() {
    let app = uncached().start().await;
    let primary = sqlx::PgPool::connect(&app.db.primary_url)
        .await
        .expect("primary connect");
    for _ in 0..20 {
        let mut tx = primary.begin().await.expect("begin");
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await
            .expect("async commit");
        sqlx::query(
            "UPDATE cities SET population = population WHERE id = (SELECT min(id) FROM cities)",
        )
        .execute(&mut *tx)
        .await
        .expect("update");
        let before_commit: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
            .fetch_one(&mut *tx)
            .await
            .expect("insert position");
        tx.commit().await.expect("commit");
        let token = app.state.db.current_lsn().await.expect("token");
        let before_commit: Lsn = before_commit.parse().expect("lsn");
        assert!(
            token > before_commit,
            "token {token} must lie past the commit record (after {before_commit})"
        );
    }
    primary.close().await;
    app.stop().await;
}
