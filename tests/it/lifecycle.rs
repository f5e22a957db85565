//! The real binary under a real SIGTERM: readiness flips to 503, in-flight
//! requests finish, the process exits cleanly; logs are JSON with request ids.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use crate::services::services;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_while_ready_answers_503() {
    let db = services().create_database().await;
    let primary = sqlx::PgPool::connect(&db.primary_url)
        .await
        .expect("connect");
    refbackend::seed::run(&primary).await.expect("seed");
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_refbackend"))
        .arg("serve")
        .env("APP_ENV", "test")
        .env("DATABASE_URL", &db.primary_url)
        .env("REDIS_URL", services().redis_url())
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("SHUTDOWN_READINESS_DELAY", "1500ms")
        .env("SHUTDOWN_DRAIN_TIMEOUT", "20s")
        .env("HEALTH_CHECK_INTERVAL", "100ms")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn refbackend");
    let stdout = child.stdout.take().expect("stdout");
    let logs = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(line);
        }
        all
    });
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !client
        .get(format!("{base}/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "server did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A page read until the fast path replays it (the first read is routed;
    // a cache resync on a loaded box may route one more). Both kinds log.
    let replays = async || {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|l| l.strip_prefix("api_fast_path_replays_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let mut replayed_id = None;
    for id in ["routed-one", "replayed-1", "replayed-2", "replayed-3"] {
        let before = replays().await;
        let response = client
            .get(format!("{base}/api/v1/cities/1"))
            .header("x-request-id", id)
            .send()
            .await
            .expect("city");
        assert_eq!(response.status(), 200);
        if id != "routed-one" && replays().await == before + 1.0 {
            replayed_id = Some(id);
            break;
        }
    }
    let replayed_id = replayed_id.expect("the second read of a page is replayed");

    // Hold a lock so the next read blocks: a request that is in flight for as
    // long as the test wants.
    let mut lock = primary.begin().await.expect("begin");
    sqlx::query("LOCK TABLE cities IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let slow = tokio::spawn({
        let client = client.clone();
        let url = format!("{base}/api/v1/cities");
        async move {
            client
                .get(url)
                .header("x-request-id", "slow-one")
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!slow.is_finished(), "the request is blocked on the lock");

    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());

    // Readiness answers 503 while the listener still accepts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let response = client
            .get(format!("{base}/ready"))
            .send()
            .await
            .expect("still accepting");
        if response.status() == 503 {
            let body: serde_json::Value = response.json().await.expect("json");
            assert_eq!(body["shutting_down"], true);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/ready did not turn 503"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Let the in-flight request finish after the listener has closed.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(!slow.is_finished());
    lock.commit().await.expect("release lock");
    let response = slow
        .await
        .expect("task")
        .expect("in-flight request completed");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["items"].as_array().map(Vec::len), Some(20));

    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("process exits after draining")
        .expect("wait");
    assert!(status.success(), "clean exit: {status}");
    primary.close().await;

    // JSON access logs carry the request id, method, matched route, status and latency.
    let lines = logs.await.expect("logs");
    let entry = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["request_id"] == "slow-one" && v["status"] == 200)
        .unwrap_or_else(|| {
            panic!(
                "no access log line for the slow request in:\n{}",
                lines.join("\n")
            )
        });
    assert_eq!(entry["route"], "/api/v1/cities");
    assert_eq!(entry["method"], "GET");
    assert!(entry["latency_ms"].as_f64().is_some_and(|ms| ms > 1000.0));
    for id in ["routed-one", replayed_id] {
        let logged = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| {
                v["request_id"] == id && v["route"] == "/api/v1/cities/{id}" && v["status"] == 200
            });
        assert!(
            logged,
            "no access log line for {id} in:\n{}",
            lines.join("\n")
        );
    }
}

#[tokio::test]
async fn production_refuses_to_start_with_a_weak_or_missing_signing_secret() {
    for secret in [
        None,
        Some("too-short"),
        Some("changeme-changeme-changeme-changeme-xyz"),
    ] {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_refbackend"));
        command
            .arg("serve")
            .env_remove("JWT_SECRET")
            .env("APP_ENV", "production")
            .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
            .env("BIND_ADDR", format!("127.0.0.1:{}", free_port()));
        if let Some(s) = secret {
            command.env("JWT_SECRET", s);
        }
        let output = tokio::time::timeout(Duration::from_secs(20), command.output())
            .await
            .expect("exits at once")
            .expect("runs");
        assert_eq!(output.status.code(), Some(2), "{secret:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("JWT_SECRET"), "{secret:?}: {stderr}");
    }
}

#[tokio::test]
async fn the_admin_command_creates_an_admin_and_promotes_an_existing_account() {
    let db = services().create_database().await;
    let run = |email: &'static str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_refbackend"))
            .args(["admin", "--email", email])
            .env("APP_ENV", "test")
            .env("DATABASE_URL", &db.primary_url)
            .env("ADMIN_PASSWORD", "a sufficiently long password")
            .env("RUST_LOG", "warn")
            .output()
    };
    let created = run("root@example.com").await.expect("runs");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert!(String::from_utf8_lossy(&created.stdout).contains("created admin root@example.com"));

    let pool = sqlx::PgPool::connect(&db.primary_url)
        .await
        .expect("connect");
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, display_name) VALUES (gen_random_uuid(), 'member@example.com', 'x', 'M')",
    )
    .execute(&pool)
    .await
    .expect("member");
    let promoted = run("Member@Example.com").await.expect("runs");
    assert!(
        promoted.status.success(),
        "{}",
        String::from_utf8_lossy(&promoted.stderr)
    );
    let roles: Vec<(String, String)> =
        sqlx::query_as("SELECT email, role FROM users ORDER BY email")
            .fetch_all(&pool)
            .await
            .expect("roles");
    assert_eq!(
        roles,
        vec![
            ("member@example.com".to_owned(), "admin".to_owned()),
            ("root@example.com".to_owned(), "admin".to_owned())
        ]
    );
    let hash: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE email = 'root@example.com'")
            .fetch_one(&pool)
            .await
            .expect("hash");
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    pool.close().await;
}
