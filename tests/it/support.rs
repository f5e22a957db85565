//! `TestApp`: the real application, built from a real configuration, serving on
//! an ephemeral port against the harness's databases.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use refbackend::app::{App, AppState};
use refbackend::config::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::services::{REPLICA_CATCH_UP_TIMEOUT, TestDatabase, services};

/// The signing secret of test apps (random-looking, 48 bytes).
pub const TEST_SECRET: &str = "q3Jx9vT2mL7cR1wZ8kN4pB6yF0hD5sG2aE9uK3iO7tY1nM4b";

pub struct TestAppBuilder {
    env: HashMap<String, String>,
    /// Whether the app reads from the database's replica (`TestDatabase::replica_url`).
    with_replica: bool,
    seed: bool,
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub db: TestDatabase,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        let mut env = HashMap::new();
        for (k, v) in [
            ("APP_ENV", "test"),
            ("HEALTH_CHECK_INTERVAL", "100ms"),
            ("DB_REPLICA_MAX_LAG", "2s"),
            ("DB_POOL_MAX_CONNECTIONS", "5"),
            ("DB_POOL_MIN_IDLE", "0"),
            ("DB_REPLICA_POOL_MAX_CONNECTIONS", "5"),
            ("DB_REPLICA_POOL_MIN_IDLE", "0"),
            ("DB_REPLICA_POOL_ACQUIRE_TIMEOUT", "1s"),
            ("SHUTDOWN_READINESS_DELAY", "0s"),
            ("SHUTDOWN_DRAIN_TIMEOUT", "5s"),
            ("RUST_LOG", "warn"),
            ("JWT_KID", "test-1"),
            ("JWT_SECRET", TEST_SECRET),
            ("PASSWORD_HASH_CONCURRENCY", "2"),
        ] {
            env.insert(k.to_owned(), v.to_owned());
        }
        TestAppBuilder {
            env,
            with_replica: true,
            seed: true,
        }
    }

    /// The default app: shared replica, seeded reference data, replica caught up.
    pub async fn start() -> TestApp {
        Self::builder().start().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_json(&self, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let response = self.get(path).await;
        let status = response.status();
        (status, response.json().await.expect("json body"))
    }

    /// `n` accounts with `role`, inserted directly (no password hashing, so
    /// fast), each with an access token: (user id, token).
    pub async fn users_with_role(&self, n: usize, role: &str) -> Vec<(uuid::Uuid, String)> {
        let ids: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::now_v7()).collect();
        let emails: Vec<String> = ids.iter().map(|id| format!("{id}@example.com")).collect();
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, display_name, role)
             SELECT id, email, 'not-a-hash', 'Resident', $3
               FROM UNNEST($1::uuid[], $2::text[]) AS x(id, email)",
        )
        .bind(&ids)
        .bind(&emails)
        .bind(role)
        .execute(self.state.db.write())
        .await
        .expect("users");
        ids.into_iter()
            .map(|id| {
                let token = self.state.auth.jwt.issue(id, role).expect("token").token;
                (id, token)
            })
            .collect()
    }

    /// A new contest (an office with one seat) on `city`'s ballot, in a new
    /// election, inserted directly: its id.
    pub async fn contest_in(&self, city: i64) -> i64 {
        sqlx::query_scalar(
            "WITH e AS (
                 INSERT INTO elections (city_id, name, election_date)
                 VALUES ($1, 'Election ' || gen_random_uuid(), current_date + 30)
                 RETURNING id)
             INSERT INTO contests (election_id, kind, title, seats)
             SELECT id, 'office', 'Mayor', 1 FROM e
             RETURNING id",
        )
        .bind(city)
        .fetch_one(self.state.db.write())
        .await
        .expect("contest")
    }

    /// A candidate profile in `contest` linked to the account `user`: its id.
    pub async fn profile_for(&self, user: uuid::Uuid, contest: i64) -> uuid::Uuid {
        let id = uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO candidate_profiles (id, contest_id, user_id, display_name)
             VALUES ($1, $2, $3, 'Candidate ' || $3::text)",
        )
        .bind(id)
        .bind(contest)
        .bind(user)
        .execute(self.state.db.write())
        .await
        .expect("candidate profile");
        id
    }

    /// `n` candidate accounts, each with a profile in one new contest on
    /// `city`'s ballot, so they may answer the city's questions: (user id,
    /// token), as [`TestApp::users_with_role`].
    pub async fn candidates_in(&self, n: usize, city: i64) -> Vec<(uuid::Uuid, String)> {
        let candidates = self.users_with_role(n, "candidate").await;
        let contest = self.contest_in(city).await;
        for (id, _) in &candidates {
            self.profile_for(*id, contest).await;
        }
        candidates
    }

    /// Registers a member and returns (user id, access token).
    pub async fn register_member(&self, email: &str) -> (String, String) {
        let response = self
            .client
            .post(self.url("/api/v1/auth/register"))
            .json(&serde_json::json!({
                "email": email,
                "password": "correct horse battery",
                "display_name": "Learner",
            }))
            .send()
            .await
            .expect("register");
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = response.json().await.expect("json");
        (
            body["user"]["id"].as_str().expect("id").to_owned(),
            body["access_token"].as_str().expect("token").to_owned(),
        )
    }

    /// The value of one sample in `/metrics`, e.g.
    /// `metric("db_reads_total", &[("pool", "replica-0")])`; 0 when absent.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self
            .get("/metrics")
            .await
            .text()
            .await
            .expect("metrics text");
        metric_value(&text, name, labels)
    }

    /// Polls `/ready` until `check` accepts its body, or panics after `timeout`.
    pub async fn wait_for_ready(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (_, body) = self.get_json("/ready").await;
            if check(&body) {
                return body;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}; last /ready: {body:#}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops serving and closes the pools.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server shut down cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Finds one sample in Prometheus text; labels must all match (in any order).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all_match = labels.iter().all(|(k, v)| {
                label_text
                    .split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\""))
            });
            all_match.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

impl TestAppBuilder {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn without_replica(mut self) -> Self {
        self.with_replica = false;
        self
    }

    pub fn unseeded(mut self) -> Self {
        self.seed = false;
        self
    }

    pub async fn start(self) -> TestApp {
        let db = services().create_database().await;
        self.start_on(db).await
    }

    /// Starts against an arbitrary primary URL (e.g. one where nothing listens).
    pub async fn start_with_primary_url(self, url: &str) -> TestApp {
        let db = TestDatabase {
            name: "external".to_owned(),
            primary_url: url.to_owned(),
            replica_url: String::new(),
        };
        self.start_on(db).await
    }

    pub async fn start_on(mut self, db: TestDatabase) -> TestApp {
        let replica_url = self.with_replica.then(|| db.replica_url.clone());
        if self.seed {
            let pool = sqlx::PgPool::connect(&db.primary_url)
                .await
                .expect("primary connect");
            // The exercise bank is seeded once, in the template database.
            let mut conn = pool.acquire().await.expect("primary connect");
            refbackend::seed::cities(&mut conn).await.expect("seed");
            drop(conn);
            pool.close().await;
        }
        if let Some(url) = &replica_url {
            wait_for_catch_up(&db.primary_url, url).await;
            self.env.insert("DATABASE_REPLICA_URLS".into(), url.clone());
        }
        self.env
            .insert("DATABASE_URL".into(), db.primary_url.clone());
        self.env
            .entry("REDIS_URL".into())
            .or_insert_with(|| services().redis_url());
        // Rate limits and caches of different tests must not meet in the shared
        // Redis; instances of one test (same database) share them on purpose.
        self.env
            .entry("REDIS_KEY_PREFIX".into())
            .or_insert_with(|| format!("{}:", db.name));
        // Media of different tests must not meet either: a directory each,
        // removed with the harness's temporary directory.
        self.env.entry("MEDIA_STORE_URL".into()).or_insert_with(|| {
            format!(
                "file://{}",
                services().root.join("media").join(&db.name).display()
            )
        });
        let env = self.env;
        let config = Config::from_lookup(|k| env.get(k).cloned()).expect("valid test config");
        let app = App::build(config).await.expect("app builds");
        let state = app.state.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(refbackend::server::serve(app, listener, async move {
            let _ = stopped.await;
        }));
        TestApp {
            addr,
            // The raw wire: tests check Content-Encoding and compressed sizes,
            // and the workspace's load generator enables reqwest's gzip feature.
            client: reqwest::Client::builder()
                .no_gzip()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            db,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

/// Waits until the replica at `replica_url` has replayed everything the primary
/// had written when this was called.
pub async fn wait_for_catch_up(primary_url: &str, replica_url: &str) {
    let primary = sqlx::PgPool::connect(primary_url)
        .await
        .expect("primary connect");
    let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
        .fetch_one(&primary)
        .await
        .expect("primary lsn");
    primary.close().await;
    let deadline = tokio::time::Instant::now() + REPLICA_CATCH_UP_TIMEOUT;
    loop {
        if let Ok(replica) = sqlx::PgPool::connect(replica_url).await {
            let caught_up: Option<bool> =
                sqlx::query_scalar("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn")
                    .bind(&lsn)
                    .fetch_one(&replica)
                    .await
                    .ok();
            replica.close().await;
            if caught_up == Some(true) {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica did not replay up to {lsn} within {REPLICA_CATCH_UP_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free TCP port on 127.0.0.1 (bound then released: good enough for tests).
/// Sends `method path` as the holder of `token`, with an optional JSON body:
/// (status, the JSON body or null).
pub async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// A free port, from the harness's registry, so that no port is handed both
/// to a test's server and to one of the harness's Postgres nodes.
pub fn free_port() -> u16 {
    crate::services::reserve_port()
}

/// The real `refbackend serve` binary as a child process (killed when dropped).
pub struct BinaryServer {
    pub child: tokio::process::Child,
    pub port: u16,
}

impl BinaryServer {
    /// Starts `refbackend serve` on `port` against `db` (primary only) and the
    /// shared Redis, with `extra` settings, and waits until `/ready` is 200.
    pub async fn start(db: &TestDatabase, port: u16, extra: &[(&str, &str)]) -> BinaryServer {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_refbackend"));
        command
            .arg("serve")
            .env("APP_ENV", "test")
            .env("DATABASE_URL", &db.primary_url)
            .env("REDIS_URL", services().redis_url())
            .env("REDIS_KEY_PREFIX", format!("{}:", db.name))
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("JWT_SECRET", TEST_SECRET)
            .env("HEALTH_CHECK_INTERVAL", "100ms")
            .env("SHUTDOWN_READINESS_DELAY", "0s")
            .env("RUST_LOG", "warn")
            .env(
                "MEDIA_STORE_URL",
                format!(
                    "file://{}",
                    services().root.join("media").join(&db.name).display()
                ),
            )
            .kill_on_drop(true);
        for (k, v) in extra {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn refbackend");
        let server = BinaryServer { child, port };
        server.wait_ready().await;
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client
                .get(self.url("/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status() == reqwest::StatusCode::OK);
            if ready {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "instance on {} did not become ready",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// How many connections are subscribed to the instances' invalidation
/// channel (`<prefix>cache:invalidate`; the prefix is the database's name).
pub async fn invalidation_subscribers(redis_url: &str, app: &TestApp) -> i64 {
    let channel = format!("{}:cache:invalidate", app.db.name);
    let Ok(client) = redis::Client::open(redis_url) else {
        return 0;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return 0;
    };
    redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(&channel)
        .query_async::<(String, i64)>(&mut conn)
        .await
        .map_or(0, |(_, n)| n)
}
