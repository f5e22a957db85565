//! The layered cache (L1 in-process, L2 Redis): hits per layer, single flight,
//! invalidation across instances through Redis, and Redis failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use refbackend::cache::Namespace;
use refbackend::error::AppError;

use crate::support::{TestApp, TestAppBuilder, free_port};

/// For tests that count each layer's outcomes exactly: a Redis reply held up
/// past the 250 ms default by a loaded CI box would count as an L2 error, not
/// the miss or hit under test.
fn patient_redis() -> TestAppBuilder {
    TestApp::builder()
        .without_replica()
        .env("REDIS_RESPONSE_TIMEOUT", "5s")
}

async fn cache_count(app: &TestApp, layer: &str, result: &str) -> f64 {
    app.metric(
        "cache_requests_total",
        &[
            ("layer", layer),
            ("namespace", "cities"),
            ("result", result),
        ],
    )
    .await
}

#[tokio::test]
async fn a_public_get_is_loaded_once_then_served_from_l1_and_other_instances_hit_l2() {
    let a = patient_redis().start().await;
    let first = a.get("/api/v1/cities/1").await;
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].clone();
    let body = first.text().await.expect("body");
    assert_eq!(cache_count(&a, "l1", "miss").await, 1.0);
    assert_eq!(cache_count(&a, "l2", "miss").await, 1.0);

    let again = a.get("/api/v1/cities/1").await;
    assert_eq!(again.headers()["etag"], etag);
    assert_eq!(again.text().await.expect("body"), body);
    assert_eq!(cache_count(&a, "l1", "hit").await, 1.0);
    assert_eq!(
        a.metric("db_reads_total", &[("pool", "primary")]).await,
        1.0,
        "the hit touched no database"
    );

    // A second instance on the same Redis: its L1 is cold, Redis has it.
    let b = patient_redis().unseeded().start_on(a.db.clone()).await;
    let from_b = b.get("/api/v1/cities/1").await;
    assert_eq!(from_b.headers()["etag"], etag, "same representation");
    assert_eq!(cache_count(&b, "l2", "hit").await, 1.0);
    assert_eq!(
        b.metric("db_reads_total", &[("pool", "primary")]).await,
        0.0
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn concurrent_misses_for_one_key_run_a_single_load() {
    let app = TestApp::builder().without_replica().start().await;
    let loads = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let cache = app.state.cache.clone();
            let loads = loads.clone();
            tokio::spawn(async move {
                cache
                    .get_or_load(Namespace::Cities, "single-flight", || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, AppError>(serde_json::json!({"loaded": true}))
                    })
                    .await
                    .map(|cached| cached.body.clone())
            })
        })
        .collect();
    for task in tasks {
        let body = task.await.expect("task").expect("loaded");
        assert_eq!(&body[..], br#"{"loaded":true}"#);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_failed_load_is_not_cached() {
    let app = TestApp::builder().without_replica().start().await;
    let missing = app.get("/api/v1/cities/999999").await;
    assert_eq!(missing.status(), 404);
    sqlx::query(
        "INSERT INTO cities (id, slug, name, region, country, timezone)
         OVERRIDING SYSTEM VALUE VALUES (999999, 'late-town', 'Late Town', 'Nowhere', 'US', 'UTC')",
    )
    .execute(app.state.db.write())
    .await
    .expect("insert");
    assert_eq!(app.get("/api/v1/cities/999999").await.status(), 200);
    app.stop().await;
}

/// Polls `path` on `app` until the body contains `needle`; returns how long it took.
async fn time_until_body_contains(app: &TestApp, path: &str, needle: &str) -> Duration {
    let started = Instant::now();
    loop {
        let body = app.get(path).await.text().await.expect("body");
        if body.contains(needle) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never saw {needle}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_invalidation_on_one_instance_reaches_the_l1_of_another() {
    // Primary only: this measures the cache, not replication. Patient: a
    // resubscription after a slow ping would drop B's L1 (a "resync") and
    // show the rename before any invalidation.
    let a = patient_redis().start().await;
    let b = patient_redis().unseeded().start_on(a.db.clone()).await;
    // Both instances hold the city in L1 (30 s TTL) and Redis has it too.
    for app in [&a, &b] {
        let body = app
            .get("/api/v1/cities/1")
            .await
            .text()
            .await
            .expect("body");
        assert!(!body.contains("Renamed"));
    }
    sqlx::query("UPDATE cities SET name = 'Renamed City' WHERE id = 1")
        .execute(a.state.db.write())
        .await
        .expect("update");
    // Without an invalidation, B keeps serving its copy.
    let stale = b.get("/api/v1/cities/1").await.text().await.expect("body");
    assert!(!stale.contains("Renamed"), "served from L1");

    a.state.cache.invalidate(Namespace::Cities).await;
    // Each waits with a deadline (5 s, far below the 30 s L1 TTL that would
    // otherwise hide the change): what is asserted is that the message
    // arrives, not how fast on a loaded machine; the time is printed.
    let on_a = time_until_body_contains(&a, "/api/v1/cities/1", "Renamed").await;
    let on_b = time_until_body_contains(&b, "/api/v1/cities/1", "Renamed").await;
    eprintln!(
        "[cache] invalidation seen by the writer after {on_a:?}, by the other instance after {on_b:?}"
    );
    assert!(
        b.metric(
            "cache_invalidations_total",
            &[("namespace", "cities"), ("origin", "remote")]
        )
        .await
            >= 1.0
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn with_redis_unreachable_public_reads_fall_back_to_l1_and_the_database() {
    let app = TestApp::builder()
        .without_replica()
        .env("REDIS_URL", &format!("redis://127.0.0.1:{}", free_port()))
        .start()
        .await;
    for _ in 0..5 {
        let response = app.get("/api/v1/cities?limit=3").await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(cache_count(&app, "l1", "hit").await, 4.0);
    assert!(cache_count(&app, "l2", "error").await >= 1.0);
    // A write still invalidates this instance's L1 at once.
    sqlx::query("UPDATE cities SET name = 'Aaa First' WHERE id = 1")
        .execute(app.state.db.write())
        .await
        .expect("update");
    app.state.cache.invalidate(Namespace::Cities).await;
    let body = app
        .get("/api/v1/cities?limit=3")
        .await
        .text()
        .await
        .expect("body");
    assert!(body.contains("Aaa First"), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn public_data_is_publicly_cacheable_and_per_user_data_is_not() {
    let app = TestApp::builder().without_replica().start().await;
    for path in [
        "/api/v1/cities",
        "/api/v1/cities/1",
        "/api/v1/verbs?limit=5",
        "/api/v1/verbs/tener/conjugations",
        "/api/v1/exercises?limit=5",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let cache_control = response.headers()["cache-control"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(
            cache_control.starts_with("public, max-age="),
            "{path}: {cache_control}"
        );
        assert!(response.headers().contains_key("etag"), "{path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn compressed_public_responses_vary_on_accept_encoding_and_per_user_ones_are_private() {
    let app = TestApp::builder().without_replica().start().await;
    let response = app
        .client
        .get(app.url("/api/v1/exercises?limit=20"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let vary = response.headers()["vary"]
        .to_str()
        .expect("ascii")
        .to_lowercase();
    assert!(vary.contains("accept-encoding"), "{vary}");

    let (_, token) = app.register_member("private@example.com").await;
    for path in [
        "/api/v1/users/me",
        "/api/v1/users/me/progress",
        "/api/v1/practice/next",
    ] {
        let response = app
            .client
            .get(app.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()["cache-control"],
            "private, no-store",
            "{path}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn running_instances_serve_what_the_seed_command_wrote_not_their_cached_copies() {
    let app = TestApp::builder().without_replica().start().await;
    let (_, city) = app.get_json("/api/v1/cities/1").await;
    let name = city["name"].as_str().expect("name").to_owned();
    let (_, page) = app.get_json("/api/v1/exercises?limit=1").await;
    let exercise = page["items"][0]["id"].as_i64().expect("exercise id");
    let path = format!("/api/v1/exercises/{exercise}");
    let (_, original) = app.get_json(&path).await;
    let instructions = original["instructions"].as_str().expect("text").to_owned();

    // Reference data drifted (an older release, a hand edit) and the instance
    // caches the drifted copies, in L1 for 30 s and in Redis for 10 min.
    sqlx::query("UPDATE cities SET name = 'Drifted City' WHERE id = 1")
        .execute(app.state.db.write())
        .await
        .expect("update");
    sqlx::query("UPDATE exercises SET instructions = 'Drifted instructions.' WHERE id = $1")
        .bind(exercise)
        .execute(app.state.db.write())
        .await
        .expect("update");
    app.state.cache.invalidate(Namespace::Cities).await;
    app.state.cache.invalidate(Namespace::Exercises).await;
    time_until_body_contains(&app, "/api/v1/cities/1", "Drifted City").await;
    time_until_body_contains(&app, &path, "Drifted instructions.").await;

    // The seed command puts the reference data back and tells the instance.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_refbackend"))
        .arg("seed")
        .env("APP_ENV", "test")
        .env("DATABASE_URL", &app.db.primary_url)
        .env("REDIS_URL", crate::services::services().redis_url())
        .env("REDIS_KEY_PREFIX", format!("{}:", app.db.name))
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    time_until_body_contains(&app, "/api/v1/cities/1", &name).await;
    time_until_body_contains(&app, &path, &instructions).await;
    app.stop().await;
}
