//! Capacity planning: the admin statistics, `capacity snapshot` on a real
//! database, and `capacity forecast` from a load test's output folder.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{TestApp, wait_for_catch_up};

async fn get(app: &TestApp, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = app.client.get(app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> Value {
    let response = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.expect("json")
}

async fn scalar(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(app.state.db.write())
        .await
        .expect(sql)
}

/// Two learners who registered (and so are active today), each with an
/// attempt, a question and a vote; one dormant account. Returns the learners'
/// tokens.
async fn some_activity(app: &TestApp) -> Vec<String> {
    let mut tokens = Vec::new();
    for email in ["ana@example.com", "luis@example.com"] {
        tokens.push(app.register_member(email).await.1);
    }
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, display_name)
         VALUES ($1, 'dormant@example.com', 'not-a-hash', 'Dormant')",
    )
    .bind(Uuid::now_v7())
    .execute(app.state.db.write())
    .await
    .expect("dormant user");
    let (exercise, answer): (i64, String) =
        sqlx::query_as("SELECT id, answer FROM exercises ORDER BY id LIMIT 1")
            .fetch_one(app.state.db.write())
            .await
            .expect("exercise");
    let city = scalar(app, "SELECT min(id) FROM cities").await;
    let mut questions = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        post(
            app,
            &format!("/api/v1/exercises/{exercise}/attempts"),
            token,
            json!({"answer": answer}),
        )
        .await;
        let q = post(
            app,
            &format!("/api/v1/cities/{city}/questions"),
            token,
            json!({"body": format!("Question number {i} about the new bus lanes downtown?")}),
        )
        .await;
        questions.push(q["question"]["id"].as_str().expect("id").to_owned());
    }
    // Each learner votes on both questions.
    for token in &tokens {
        for q in &questions {
            let response = app
                .client
                .put(app.url(&format!("/api/v1/questions/{q}/vote")))
                .bearer_auth(token)
                .json(&json!({"value": 1}))
                .send()
                .await
                .expect("vote");
            assert!(response.status().is_success());
        }
    }
    tokens
}

#[tokio::test]
async fn admin_stats_count_what_was_written_and_only_admins_read_them() {
    let app = TestApp::start().await;
    let learners = some_activity(&app).await;
    let admin = app.users_with_role(1, "admin").await.remove(0).1;

    let (status, body) = get(&app, "/api/v1/admin/stats", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = get(&app, "/api/v1/admin/stats", Some(&learners[0])).await;
    assert_eq!(status, 403, "{body}");

    // Stats are read from the replica: wait until it has everything.
    wait_for_catch_up(&app.db.primary_url, &app.db.replica_url).await;
    let response = app
        .client
        .get(app.url("/api/v1/admin/stats"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("stats");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["cache-control"],
        "private, no-store",
        "per-caller data is never shared by a cache"
    );
    let stats: Value = response.json().await.expect("json");
    assert_eq!(stats["users"], 4, "three learners and the admin");
    assert_eq!(
        stats["active_today"], 2,
        "the dormant account never signed in"
    );
    // The counts come from aggregates; they must equal the event tables.
    assert_eq!(
        stats["attempts"],
        scalar(&app, "SELECT count(*) FROM attempts").await
    );
    assert_eq!(stats["attempts"], 2);
    assert_eq!(stats["questions"], 2);
    assert_eq!(
        stats["votes"],
        scalar(&app, "SELECT count(*) FROM question_votes").await
    );
    assert_eq!(stats["votes"], 4);
    assert_eq!(
        stats["exercises"],
        scalar(&app, "SELECT count(*) FROM exercises").await
    );
    assert!(stats["database_bytes"].as_i64().expect("bytes") > 1_000_000);
    let tables = stats["tables"].as_array().expect("tables");
    let attempts = tables
        .iter()
        .find(|t| t["name"] == "attempts")
        .expect("attempts table");
    assert!(
        attempts["partitions"].as_i64().expect("partitions") >= 2,
        "{attempts}"
    );
    assert!(attempts["bytes"].as_i64().expect("bytes") > 0);
    assert!(
        !tables.iter().any(|t| t["name"] == "attempts_default"),
        "partitions are folded into their table"
    );
    // Plain tables are listed too, as their own single leaf.
    for name in ["users", "exercises", "question_votes", "refresh_tokens"] {
        let table = tables
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} is listed: {tables:?}"));
        assert_eq!(table["partitions"], 0, "{table}");
        assert!(table["bytes"].as_i64().expect("bytes") > 0, "{table}");
    }
    app.stop().await;
}

async fn refbackend(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_refbackend"));
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().await.expect("runs")
}

#[tokio::test]
async fn the_snapshot_command_reads_the_primary_and_prints_json_a_forecast_can_use() {
    let app = TestApp::start().await;
    some_activity(&app).await;
    let output = refbackend(
        &["capacity", "snapshot", "--format", "json"],
        &[("APP_ENV", "test"), ("DATABASE_URL", &app.db.primary_url)],
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let snapshot: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(snapshot["users"], 3);
    assert_eq!(snapshot["attempts"], 2);

    // The snapshot feeds a forecast: its users and its share active today.
    let file = std::env::temp_dir().join(format!("refbackend-snapshot-{}.json", app.db.name));
    std::fs::write(&file, &output.stdout).expect("write snapshot");
    let plan = refbackend(
        &[
            "capacity",
            "forecast",
            "--snapshot",
            file.to_str().expect("path"),
            "--instance-rps",
            "500",
            "--months",
            "1",
            "--format",
            "json",
        ],
        &[],
    )
    .await;
    let _ = std::fs::remove_file(&file);
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let plan: Value = serde_json::from_slice(&plan.stdout).expect("json");
    assert_eq!(plan["inputs"]["users"]["value"], 3.0);
    let share = plan["inputs"]["active_share"]["value"]
        .as_f64()
        .expect("share");
    assert!((share - 2.0 / 3.0).abs() < 1e-9, "{share}");
    assert_eq!(
        plan["inputs"]["base_bytes"]["value"].as_f64(),
        snapshot["database_bytes"].as_f64()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_forecast_derives_per_instance_throughput_from_a_load_test_folder() {
    let dir = std::env::temp_dir().join(format!("refbackend-loadtest-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("dir");
    let stats = |count: u64, rps: f64| json!({"count": count, "failures": 0, "rps": rps, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0});
    let summary = json!({
        "duration_s": 100, "max_users": 10,
        "total": stats(10_000, 100.0),
        "requests": {
            "GET /api/v1/exercises": stats(7_000, 70.0),
            "POST /api/v1/exercises/{id}/attempts": stats(2_000, 20.0),
            "PUT /api/v1/questions/{id}/vote": stats(1_000, 10.0),
        },
        "error_rate": 0.0, "limits": {"max_p95_ms": 500.0, "max_error_rate": 0.01},
        "passed": true, "failures": [],
    });
    std::fs::write(dir.join("summary.json"), summary.to_string()).expect("summary");
    // Two instances at 10 % and 15 % of a core: 100 req/s on a quarter core.
    let resources = json!([
        {"pid": 1, "cpu_percent_avg": 10.0, "cpu_percent_peak": 20.0, "rss_mb_start": 38.0, "rss_mb_peak": 60.0, "samples": 100},
        {"pid": 2, "cpu_percent_avg": 15.0, "cpu_percent_peak": 25.0, "rss_mb_start": 38.0, "rss_mb_peak": 60.0, "samples": 100},
    ]);
    std::fs::write(dir.join("resources.json"), resources.to_string()).expect("resources");
    // What the run left in its database: 300 kB for 100 users, 1 MB for
    // 2,000 writes, the rest reference data.
    let table = |name: &str, bytes: i64| json!({"name": name, "partitions": 0, "rows_estimate": null, "bytes": bytes});
    let snapshot = json!({
        "taken_at": "2026-12-02T00:00:00Z", "users": 100, "active_today": 100,
        "exercises": 3422, "attempts": 1000, "questions": 100, "votes": 900, "answers": 0,
        "database_bytes": 30_000_000,
        "tables": [
            table("exercises", 5_000_000), table("users", 200_000), table("user_progress", 100_000),
            table("attempts", 600_000), table("questions", 200_000), table("question_votes", 200_000),
        ],
    });
    std::fs::write(dir.join("snapshot.json"), snapshot.to_string()).expect("snapshot");
    let dir_arg = dir.to_str().expect("path").to_owned();
    let run = |extra: &'static [&'static str]| {
        let mut args = vec![
            "capacity",
            "forecast",
            "--users",
            "50000",
            "--loadtest",
            &dir_arg,
        ];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            refbackend(&args, &[]).await
        }
    };

    let output = run(&["--format", "json", "--months", "2"]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let plan: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(plan["inputs"]["instance_rps"]["value"], 400.0, "{plan}");
    assert_eq!(plan["inputs"]["write_share"]["value"], 0.3);
    assert_eq!(plan["inputs"]["bytes_per_user"]["value"], 3_000.0);
    assert_eq!(plan["inputs"]["bytes_per_write"]["value"], 500.0);
    assert_eq!(
        plan["inputs"]["base_bytes"]["value"],
        28_700_000.0 + 50_000.0 * 3_000.0,
        "reference data plus today's users"
    );
    assert_eq!(plan["months"].as_array().map(Vec::len), Some(3));

    let csv = run(&["--format", "csv", "--months", "1"]).await;
    let csv = String::from_utf8(csv.stdout).expect("utf-8");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("month,users,"));
    assert!(lines[1].starts_with("0,50000,"));

    let table = run(&["--months", "1"]).await;
    let table = String::from_utf8(table.stdout).expect("utf-8");
    assert!(
        table.contains("100.0 req/s at 25.0 % of one core"),
        "{table}"
    );

    // Nonsense is a usage error naming every problem, with no plan printed.
    let bad = run(&["--active-share", "2", "--target-utilization", "0"]).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(bad.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("active share") && stderr.contains("target utilization"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    let missing = refbackend(&["capacity", "forecast", "--users", "10"], &[]).await;
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--instance-rps"));
}
