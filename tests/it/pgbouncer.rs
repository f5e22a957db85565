//! The service through a real PgBouncer in transaction mode, started from the
//! machine's binary with the shipped `deploy/pgbouncer/pgbouncer.ini`: a few
//! server connections serve many clients' transactions, so any named prepared
//! statement or session state would break here.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::services::{TestDatabase, services};
use crate::support::{TestApp, free_port, send};

struct PgBouncer {
    child: tokio::process::Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pgbouncer_binary() -> PathBuf {
    ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("pgbouncer is not installed: run scripts/test, which installs it (apt-get install pgbouncer)")
}

impl PgBouncer {
    /// PgBouncer on a free port in front of the Postgres on `pg_port`, with
    /// `server_connections` server connections per database.
    async fn start(pg_port: u16, server_connections: u32) -> PgBouncer {
        let dir = std::env::temp_dir().join(format!(
            "refbackend-pgbouncer-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        // PgBouncer refuses to run as root; as root it runs as `postgres`.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("chmod");
        let port = free_port();
        let shipped = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/pgbouncer/pgbouncer.ini"
        ))
        .expect("deploy/pgbouncer/pgbouncer.ini");
        let mut ini = shipped;
        for (from, to) in [
            (
                "* = host=postgres port=5432",
                format!("* = host=127.0.0.1 port={pg_port}"),
            ),
            (
                "listen_addr = 0.0.0.0",
                "listen_addr = 127.0.0.1".to_owned(),
            ),
            ("listen_port = 6432", format!("listen_port = {port}")),
            // The harness's Postgres trusts local connections.
            ("auth_type = scram-sha-256", "auth_type = trust".to_owned()),
            (
                "auth_file = /etc/pgbouncer/userlist.txt",
                format!("auth_file = {}", dir.join("userlist.txt").display()),
            ),
            (
                "default_pool_size = 20",
                format!("default_pool_size = {server_connections}"),
            ),
            ("min_pool_size = 5", "min_pool_size = 0".to_owned()),
        ] {
            assert!(ini.contains(from), "the shipped pgbouncer.ini has `{from}`");
            ini = ini.replace(from, &to);
        }
        std::fs::write(dir.join("pgbouncer.ini"), ini).expect("ini");
        std::fs::write(dir.join("userlist.txt"), "\"postgres\" \"\"\n").expect("userlist");
        let mut command = tokio::process::Command::new(pgbouncer_binary());
        // The effective user, from /proc.
        let is_root = std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false);
        if is_root {
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start pgbouncer");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "pgbouncer did not listen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        PgBouncer { child, dir, port }
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_pgbouncer_in_transaction_mode_register_attempts_and_votes_work_without_prepared_statement_errors()
 {
    let db = services().create_database().await;
    // Reference data goes in directly (the harness's own pool is not set up
    // for PgBouncer).
    let direct = sqlx::PgPool::connect(&db.primary_url)
        .await
        .expect("connect");
    let mut conn = direct.acquire().await.expect("connect");
    refbackend::seed::cities(&mut conn).await.expect("seed");
    drop(conn);
    direct.close().await;
    // Two server connections for a pool of twenty client connections: every
    // transaction may land on a different backend than the last.
    let bouncer = PgBouncer::start(services().primary.port(), 2).await;
    let app = TestApp::builder()
        .without_replica()
        .unseeded()
        .env("DB_BEHIND_PGBOUNCER", "true")
        // 120 requests share 2 server connections, on a machine busy with the
        // rest of the suite: waiting for a connection is expected here, and
        // what this test checks is correctness, not the wait.
        .env("DB_POOL_ACQUIRE_TIMEOUT", "20s")
        .env("RATE_LIMIT_VOTES_USER", "100000/1h")
        .env("RATE_LIMIT_ATTEMPTS_USER", "100000/1m")
        .env("RATE_LIMIT_REGISTER_IP", "1000/1h")
        .start_on(TestDatabase {
            primary_url: bouncer.url(&db.name),
            replica_url: String::new(),
            name: db.name.clone(),
        })
        .await;

    // Register and sign in (argon2, refresh tokens, the account cache).
    let mut tokens = Vec::new();
    for i in 0..6 {
        let response = app
            .client
            .post(app.url("/api/v1/auth/register"))
            .json(&json!({
                "email": format!("bouncer-{i}@example.com"),
                "password": "correct horse battery",
                "display_name": "Bounced",
            }))
            .send()
            .await
            .expect("register");
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("json");
        tokens.push(body["access_token"].as_str().expect("token").to_owned());
    }
    let login = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": "bouncer-0@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200);

    // Attempts from every learner at once, each twice with its key (a replay).
    let exercises: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, answer FROM exercises WHERE kind = 'conjugation' ORDER BY id LIMIT 10",
    )
    .fetch_all(app.state.db.write())
    .await
    .expect("exercises");
    let attempts = tokens.iter().enumerate().flat_map(|(u, token)| {
        let app = &app;
        exercises
            .iter()
            .enumerate()
            .map(move |(n, (id, answer))| async move {
                let key = format!("bouncer-{u}-{n}");
                let mut ids = Vec::new();
                for _ in 0..2 {
                    let response = app
                        .client
                        .post(app.url(&format!("/api/v1/exercises/{id}/attempts")))
                        .bearer_auth(token)
                        .header("idempotency-key", &key)
                        .json(&json!({"answer": answer}))
                        .send()
                        .await
                        .expect("attempt");
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.expect("json");
                    assert_eq!(status, 201, "{body}");
                    ids.push(body["attempt_id"].clone());
                }
                assert_eq!(ids[0], ids[1], "the replay answers the same attempt");
            })
    });
    // Sample the database's backends while the attempts run: PgBouncer's
    // server connections, however many client connections the pool opens.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (done, name) = (done.clone(), db.name.clone());
        let admin = services().primary.url("postgres");
        async move {
            let pool = sqlx::PgPool::connect(&admin).await.expect("connect");
            let mut most = 0_i64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity
                      WHERE datname = $1 AND backend_type = 'client backend'",
                )
                .bind(&name)
                .fetch_one(&pool)
                .await
                .expect("backends");
                most = most.max(n);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            pool.close().await;
            most
        }
    });
    futures_util::future::join_all(attempts).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let server_connections = sampler.await.expect("sampler");
    app.state.db.update_pool_metrics();
    let clients = app
        .metric(
            "db_pool_connections",
            &[("pool", "primary"), ("state", "idle")],
        )
        .await
        + app
            .metric(
                "db_pool_connections",
                &[("pool", "primary"), ("state", "in_use")],
            )
            .await;
    println!(
        "[pgbouncer] 120 concurrent attempt requests: {clients} client connections in the pool, \
         at most {server_connections} server connections on the database"
    );
    assert!(
        server_connections <= 2,
        "PgBouncer's pool bounds the servers: {server_connections}"
    );
    assert!(
        clients > 2.0,
        "the pool opened more client connections than servers: {clients}"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts")
        .fetch_one(app.state.db.write())
        .await
        .expect("count");
    assert_eq!(stored, 60);
    let (status, progress) = send(
        &app,
        reqwest::Method::GET,
        "/api/v1/users/me/progress",
        &tokens[0],
        None,
    )
    .await;
    assert_eq!(status, 200, "{progress}");
    assert_eq!(progress["attempts"], 10);

    // A question and every learner's vote at once: the count stays exact.
    let (status, created) = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/cities/1/questions",
        &tokens[0],
        Some(json!({"body": "Will the city keep the pools open through September?"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let question = created["question"]["id"].as_str().expect("id").to_owned();
    let vote_path = format!("/api/v1/questions/{question}/vote");
    let votes = tokens.iter().map(|token| {
        send(
            &app,
            reqwest::Method::PUT,
            &vote_path,
            token,
            Some(json!({"value": 1})),
        )
    });
    for (status, body) in futures_util::future::join_all(votes).await {
        assert!(status == 200 || status == 201, "{status} {body}");
    }
    let (status, read) = send(
        &app,
        reqwest::Method::GET,
        &format!("/api/v1/questions/{question}"),
        &tokens[1],
        None,
    )
    .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["upvotes"], 6, "{read}");
    let (status, board) = send(
        &app,
        reqwest::Method::GET,
        "/api/v1/leaderboard?period=all_time",
        &tokens[0],
        None,
    )
    .await;
    assert_eq!(status, 200, "{board}");
    app.stop().await;
    drop(bouncer);
}
