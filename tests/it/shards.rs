//! Stage 4: per-user sharding on three real Postgres clusters started by the
//! harness — `main` (the shared primary and its streaming replica), `shard-a`
//! (a primary of its own with a streaming replica) and `shard-b` (a primary of
//! its own) — and online bucket moves under a running write load.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use refbackend::db::shards::{self, bucket_of, mover};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::services::{PgNode, TestDatabase, services};
use crate::support::{TestApp, TestAppBuilder, wait_for_catch_up};

/// A migrated shard database on `node`, with main's exercises copied in.
async fn shard_database(node: &PgNode, main: &TestDatabase) -> String {
    let name = format!("s_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&node.url("postgres"))
        .await
        .expect("connect to the shard node");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create the shard database");
    let _ = admin.close().await;
    let url = node.url(&name);
    let shard = PgPool::connect(&url).await.expect("connect to the shard");
    refbackend::db::migrate::run_shard(&shard)
        .await
        .expect("migrate the shard");
    let main = PgPool::connect(&main.primary_url)
        .await
        .expect("connect to main");
    shards::sync_reference(&main, &shard)
        .await
        .expect("copy the exercises");
    main.close().await;
    shard.close().await;
    url
}

/// Three clusters: main, shard-a (with a replica), shard-b.
struct Cluster {
    main: TestDatabase,
    _a_primary: PgNode,
    _a_replica: PgNode,
    b_primary: PgNode,
    a_url: String,
    a_replica_url: String,
    b_url: String,
}

impl Cluster {
    async fn start() -> Cluster {
        let main = services().create_database().await;
        let (a_primary, b_primary) = tokio::join!(
            services().dedicated_primary(),
            services().dedicated_primary()
        );
        let a_url = shard_database(&a_primary, &main).await;
        let b_url = shard_database(&b_primary, &main).await;
        // The replica is cloned after the shard database exists, so it has it.
        let a_replica = services().dedicated_replica_of(&a_primary).await;
        let a_db = a_url.rsplit('/').next().expect("db name").to_owned();
        let a_replica_url = a_replica.url(&a_db);
        wait_for_catch_up(&a_url, &a_replica_url).await;
        Cluster {
            main,
            _a_primary: a_primary,
            _a_replica: a_replica,
            b_primary,
            a_url,
            a_replica_url,
            b_url,
        }
    }

    fn shard_urls(&self) -> String {
        format!(
            "shard-a={}|{},shard-b={}",
            self.a_url, self.a_replica_url, self.b_url
        )
    }

    /// A third of the buckets on each shard: 0..342 main, 342..683 shard-a,
    /// the rest shard-b.
    async fn spread_buckets(&self) {
        let main = PgPool::connect(&self.main.primary_url).await.expect("main");
        sqlx::query(
            "INSERT INTO shard_map (bucket, shard)
             SELECT b, CASE WHEN b < 683 THEN 'shard-a' ELSE 'shard-b' END
               FROM generate_series(342, 1023) AS b",
        )
        .execute(&main)
        .await
        .expect("shard map");
        main.close().await;
    }

    /// Main without its replica (users are inserted straight into main's
    /// primary here); shard-a with its replica.
    fn builder(&self) -> TestAppBuilder {
        TestApp::builder()
            .without_replica()
            .env("SHARD_URLS", &self.shard_urls())
            .env("RATE_LIMIT_ATTEMPTS_USER", "1000000/1m")
    }

    async fn app(&self) -> TestApp {
        self.builder().unseeded().start_on(self.main.clone()).await
    }
}

/// The databases as `refbackend shards move` sees them: pools of its own
/// (the command is a process of its own), primaries only.
fn mover_db(cluster: &Cluster) -> refbackend::db::Db {
    let env: HashMap<&str, String> = [
        ("DATABASE_URL", cluster.main.primary_url.clone()),
        (
            "SHARD_URLS",
            format!("shard-a={},shard-b={}", cluster.a_url, cluster.b_url),
        ),
    ]
    .into();
    let config =
        refbackend::config::Config::from_lookup(|k| env.get(k).cloned()).expect("mover config");
    refbackend::db::Db::new(&config.database, refbackend::metrics::Metrics::new())
        .expect("mover pools")
}

/// The shard a bucket was placed on by [`Cluster::spread_buckets`].
fn spread_shard(bucket: u16) -> &'static str {
    match bucket {
        0..342 => "main",
        342..683 => "shard-a",
        _ => "shard-b",
    }
}

/// A user id whose bucket satisfies `wanted`.
fn user_in(wanted: impl Fn(u16) -> bool) -> Uuid {
    loop {
        let id = Uuid::now_v7();
        if wanted(bucket_of(id)) {
            return id;
        }
    }
}

/// Inserts members with these ids and returns their access tokens.
async fn members(app: &TestApp, ids: &[Uuid]) -> Vec<String> {
    let emails: Vec<String> = ids.iter().map(|id| format!("{id}@example.com")).collect();
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, display_name, role)
         SELECT id, email, 'not-a-hash', 'Learner', 'member'
           FROM UNNEST($1::uuid[], $2::text[]) AS x(id, email)",
    )
    .bind(ids)
    .bind(&emails)
    .execute(app.state.db.write())
    .await
    .expect("users");
    ids.iter()
        .map(|id| {
            app.state
                .auth
                .jwt
                .issue(*id, "member")
                .expect("token")
                .token
        })
        .collect()
}

async fn exercise(app: &TestApp, offset: i64) -> (i64, String) {
    sqlx::query_as(
        "SELECT id, answer FROM exercises WHERE kind = 'conjugation' ORDER BY id OFFSET $1 LIMIT 1",
    )
    .bind(offset)
    .fetch_one(app.state.db.write())
    .await
    .expect("exercise")
}

async fn post_attempt(
    app: &TestApp,
    token: &str,
    exercise: i64,
    answer: &str,
    key: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = app
        .client
        .post(app.url(&format!("/api/v1/exercises/{exercise}/attempts")))
        .bearer_auth(token)
        .json(&json!({"answer": answer}));
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.expect("attempt");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        headers,
    )
}

async fn get(app: &TestApp, token: &str, path: &str) -> (u16, Value) {
    let response = app
        .client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("get");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Rows of `user` in each per-user table of the database at `url`.
async fn rows_of(url: &str, user: Uuid) -> HashMap<&'static str, i64> {
    let pool = PgPool::connect(url).await.expect("connect");
    let mut out = HashMap::new();
    for table in mover::PER_USER_TABLES {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE user_id = $1"
        )))
        .bind(user)
        .fetch_one(&pool)
        .await
        .expect("count");
        out.insert(*table, n);
    }
    pool.close().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_land_on_their_bucket_s_shard_and_every_per_user_endpoint_works_on_each() {
    let cluster = Cluster::start().await;
    cluster.spread_buckets().await;
    let app = cluster.app().await;
    let ids = [
        user_in(|b| spread_shard(b) == "main"),
        user_in(|b| spread_shard(b) == "shard-a"),
        user_in(|b| spread_shard(b) == "shard-b"),
    ];
    let tokens = members(&app, &ids).await;
    let urls = [
        cluster.main.primary_url.as_str(),
        cluster.a_url.as_str(),
        cluster.b_url.as_str(),
    ];
    let (exercise_id, answer) = exercise(&app, 0).await;
    for (i, (id, token)) in ids.iter().zip(&tokens).enumerate() {
        // A write, and its replay by Idempotency-Key.
        let key = format!("first-{i}");
        let (status, first, _) = post_attempt(&app, token, exercise_id, &answer, Some(&key)).await;
        assert_eq!(status, 201, "{first}");
        let (status, replay, headers) =
            post_attempt(&app, token, exercise_id, &answer, Some(&key)).await;
        assert_eq!(status, 201, "{replay}");
        assert!(headers.contains_key("idempotent-replayed"));
        assert_eq!(replay["attempt_id"], first["attempt_id"]);
        // A second item, so progress has two attempts.
        let (second_id, second_answer) = exercise(&app, 1).await;
        let (status, _, _) = post_attempt(&app, token, second_id, &second_answer, None).await;
        assert_eq!(status, 201);

        // Reads see the user's own writes at once (read-your-writes per shard).
        let (status, progress) = get(&app, token, "/api/v1/users/me/progress").await;
        assert_eq!(status, 200, "{progress}");
        assert_eq!(progress["attempts"], 2, "{progress}");
        let (status, dashboard) = get(&app, token, "/api/v1/users/me/dashboard").await;
        assert_eq!(status, 200, "{dashboard}");
        assert_eq!(
            dashboard["recent_attempts"].as_array().map(Vec::len),
            Some(2),
            "{dashboard}"
        );
        assert_eq!(dashboard["profile"]["id"], id.to_string());
        let (status, next) = get(&app, token, "/api/v1/practice/next?limit=5").await;
        assert_eq!(status, 200, "{next}");
        let offered: HashSet<i64> = next["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|item| item["reason"] == "new")
            .map(|item| item["exercise"]["id"].as_i64().expect("id"))
            .collect();
        assert!(
            !offered.contains(&exercise_id) && !offered.contains(&second_id),
            "items already carded are not new: {next}"
        );

        let (status, stats) = get(&app, token, "/api/v1/users/me/reviews/stats?days=1").await;
        assert_eq!(status, 200, "{stats}");
        assert_eq!(stats["history"][0]["attempts"], 2, "{stats}");
        assert_eq!(stats["cards"]["total"], 2);

        // The rows are on the user's shard and nowhere else.
        for (j, url) in urls.iter().enumerate() {
            let rows = rows_of(url, *id).await;
            if i == j {
                assert_eq!(rows["attempts"], 2, "shard {j}: {rows:?}");
                assert_eq!(rows["user_progress"], 1);
                assert_eq!(rows["review_cards"], 2);
                assert_eq!(rows["idempotency_keys"], 1);
            } else {
                assert!(
                    rows.values().all(|n| *n == 0),
                    "user {i} on shard {j}: {rows:?}"
                );
            }
        }
    }

    // The leaderboard ranks everybody, whichever shard holds them.
    for period in ["all_time", "weekly"] {
        let (status, board) = get(
            &app,
            &tokens[0],
            &format!("/api/v1/leaderboard?period={period}"),
        )
        .await;
        assert_eq!(status, 200, "{board}");
        let listed: HashSet<String> = board["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|e| e["user_id"].as_str().expect("id").to_owned())
            .collect();
        for id in &ids {
            assert!(listed.contains(&id.to_string()), "{period}: {board}");
        }
    }
    // Admin statistics add the shards up (read from replicas: seconds old at
    // most, so wait for shard-a's to replay).
    let admin = app.users_with_role(1, "admin").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, stats) = get(&app, &admin[0].1, "/api/v1/admin/stats").await;
        assert_eq!(status, 200, "{stats}");
        if stats["attempts"] == 6 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // /ready and /metrics report every shard.
    let (status, ready) = app.get_json("/ready").await;
    assert_eq!(status, 200, "{ready}");
    let reported: Vec<&str> = ready["dependencies"]["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(reported, ["shard-a", "shard-b"], "{ready}");
    assert_eq!(ready["dependencies"]["shards"][0]["buckets"], 341);
    assert_eq!(
        ready["dependencies"]["shards"][0]["replicas"][0]["name"],
        "shard-a/replica-0"
    );
    assert_eq!(
        app.metric("db_shard_buckets", &[("shard", "main")]).await,
        342.0
    );
    assert_eq!(
        app.metric("db_shard_buckets", &[("shard", "shard-b")])
            .await,
        341.0
    );
    assert!(
        app.metric("db_pool_max_connections", &[("pool", "shard-b/primary")])
            .await
            > 0.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_shard_has_main_s_per_user_tables_column_for_column_and_rule_for_rule() {
    let main = services().create_database().await;
    let node = services().dedicated_primary().await;
    let shard_url = shard_database(&node, &main).await;
    async fn describe(url: &str) -> Vec<String> {
        let pool = PgPool::connect(url).await.expect("connect");
        let mut tables: Vec<&str> = mover::PER_USER_TABLES.to_vec();
        tables.extend(["exercises", "shard_fence", "shard_move_dirty"]);
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT format('%s.%s %s null=%s default=%s', table_name, column_name, data_type,
                           is_nullable, coalesce(column_default, '-'))
               FROM information_schema.columns
              WHERE table_schema = 'public' AND table_name = ANY($1)
                -- main's exercises.id is an identity column; the copy takes main's ids.
                AND NOT (table_name = 'exercises' AND column_name = 'id')
              ORDER BY table_name, ordinal_position",
        )
        .bind(&tables)
        .fetch_all(&pool)
        .await
        .expect("columns");
        // Foreign keys to `users` exist only on main (accounts live there).
        let constraints: Vec<String> = sqlx::query_scalar(
            "SELECT format('%s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
               FROM pg_constraint
              WHERE conrelid::regclass::text = ANY($1)
                AND NOT (contype = 'f' AND confrelid IS NOT DISTINCT FROM to_regclass('users'))
              ORDER BY 1",
        )
        .bind(&tables)
        .fetch_all(&pool)
        .await
        .expect("constraints");
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT indexdef FROM pg_indexes
              WHERE schemaname = 'public' AND tablename = ANY($1)
              ORDER BY indexname",
        )
        .bind(&tables)
        .fetch_all(&pool)
        .await
        .expect("indexes");
        let guard: String = sqlx::query_scalar(
            "SELECT pg_get_functiondef('shard_write_guard(integer, uuid)'::regprocedure)",
        )
        .fetch_one(&pool)
        .await
        .expect("guard");
        let bucket: i32 =
            sqlx::query_scalar("SELECT shard_bucket('01a24ca5-e4fe-77e0-85d2-8bf36393d6f5')")
                .fetch_one(&pool)
                .await
                .expect("bucket");
        pool.close().await;
        let mut out = columns;
        out.extend(constraints);
        out.extend(indexes);
        // Comments differ; the body's statements must not.
        out.extend(
            guard
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("--"))
                .map(str::to_owned),
        );
        out.push(format!("bucket {bucket}"));
        out
    }
    let (on_main, on_shard) = (
        describe(&main.primary_url).await,
        describe(&shard_url).await,
    );
    for line in on_main.iter().filter(|l| !on_shard.contains(l)) {
        eprintln!("only on main:  {line}");
    }
    for line in on_shard.iter().filter(|l| !on_main.contains(l)) {
        eprintln!("only on shard: {line}");
    }
    assert_eq!(on_main, on_shard);
    let id = Uuid::parse_str("01a24ca5-e4fe-77e0-85d2-8bf36393d6f5").expect("uuid");
    assert!(
        on_main.contains(&format!("bucket {}", bucket_of(id))),
        "SQL and Rust compute the same bucket"
    );
}

/// `n` user ids in `bucket`.
fn users_in_bucket(bucket: u16, n: usize) -> Vec<Uuid> {
    (0..n).map(|_| user_in(|b| b == bucket)).collect()
}

/// Checks that each user's rows are all on the database at `url` and none on
/// `elsewhere`, that their attempts are exactly `expected` (by id), and that
/// their progress row agrees with their attempts.
async fn assert_users_whole_on(
    url: &str,
    elsewhere: &[&str],
    expected: &HashMap<Uuid, HashSet<Uuid>>,
) {
    let pool = PgPool::connect(url).await.expect("connect");
    for (user, attempts) in expected {
        let stored: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM attempts WHERE user_id = $1")
            .bind(user)
            .fetch_all(&pool)
            .await
            .expect("attempts");
        let unique: HashSet<Uuid> = stored.iter().copied().collect();
        assert_eq!(unique.len(), stored.len(), "duplicated attempts of {user}");
        assert_eq!(&unique, attempts, "attempts of {user}: lost or extra");
        let (counted, xp_sum): (i64, i64) = sqlx::query_as(
            "SELECT count(*), coalesce(sum(xp), 0)::bigint FROM attempts WHERE user_id = $1",
        )
        .bind(user)
        .fetch_one(&pool)
        .await
        .expect("sums");
        if counted > 0 {
            let (progress_attempts, progress_xp): (i32, i64) =
                sqlx::query_as("SELECT attempts, xp FROM user_progress WHERE user_id = $1")
                    .bind(user)
                    .fetch_one(&pool)
                    .await
                    .expect("progress");
            assert_eq!(i64::from(progress_attempts), counted, "progress of {user}");
            assert_eq!(progress_xp, xp_sum, "xp of {user}");
            let weekly: i64 = sqlx::query_scalar(
                "SELECT coalesce(sum(xp), 0)::bigint FROM user_weekly_xp WHERE user_id = $1",
            )
            .bind(user)
            .fetch_one(&pool)
            .await
            .expect("weekly");
            assert_eq!(weekly, xp_sum, "weekly xp of {user}");
        }
        for other in elsewhere {
            let rows = rows_of(other, *user).await;
            assert!(
                rows.values().all(|n| *n == 0),
                "{user} left rows behind: {rows:?}"
            );
        }
    }
    pool.close().await;
}

#[derive(Default)]
struct Tally {
    created: AtomicU64,
    refused: AtomicU64,
}

/// Posts attempts for `user` until `stop`, each with its own Idempotency-Key,
/// retrying a key after a 503 (which must carry Retry-After) or a dropped
/// connection. Returns the attempt ids the API answered with.
async fn write_until(
    app: Arc<TestApp>,
    user: Uuid,
    token: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> HashSet<Uuid> {
    let mut ids = HashSet::new();
    let mut n = 0_i64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let (exercise_id, answer) = exercise(&app, n % 15).await;
        let key = format!("load-{user}-{n}");
        let mut done = false;
        for _ in 0..100 {
            let (status, body, headers) =
                post_attempt(&app, &token, exercise_id, &answer, Some(&key)).await;
            match status {
                201 => {
                    let id = body["attempt_id"]
                        .as_str()
                        .expect("id")
                        .parse()
                        .expect("uuid");
                    ids.insert(id);
                    tally.created.fetch_add(1, Ordering::Relaxed);
                    done = true;
                    break;
                }
                503 => {
                    assert!(
                        headers.contains_key("retry-after"),
                        "503 without Retry-After: {body}"
                    );
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("attempt answered {other}: {body}"),
            }
        }
        assert!(done, "an attempt of {user} never succeeded");
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_move_under_write_load_loses_and_duplicates_nothing() {
    let cluster = Cluster::start().await;
    cluster.spread_buckets().await;
    let app = Arc::new(cluster.app().await);
    // A bucket on main, its users, and users elsewhere writing meanwhile.
    let bucket = bucket_of(user_in(|b| spread_shard(b) == "main"));
    let movers = users_in_bucket(bucket, 12);
    let bystanders = vec![
        user_in(|b| spread_shard(b) == "main" && b != bucket),
        user_in(|b| spread_shard(b) == "shard-b"),
    ];
    let all: Vec<Uuid> = movers.iter().chain(&bystanders).copied().collect();
    let tokens = members(&app, &all).await;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let writers: Vec<_> = all
        .iter()
        .zip(tokens)
        .map(|(user, token)| {
            tokio::spawn(write_until(
                app.clone(),
                *user,
                token,
                stop.clone(),
                tally.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let options = mover::MoveOptions {
        grace: Duration::from_secs(1),
        announce: Some((services().redis_url(), format!("{}:", app.db.name))),
    };
    let mover_db = mover_db(&cluster);
    let report = mover::move_bucket(&mover_db, bucket, "shard-b", &options)
        .await
        .expect("move");
    println!(
        "[shards] move under load: {}",
        serde_json::to_string(&report).expect("json")
    );
    assert_eq!(
        (report.source.as_str(), report.users),
        ("main", movers.len())
    );
    assert!(report.rows_copied > 0);
    // Writes go on against the new home.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut written: HashMap<Uuid, HashSet<Uuid>> = HashMap::new();
    for (user, writer) in all.iter().zip(writers) {
        written.insert(*user, writer.await.expect("writer"));
    }
    println!(
        "[shards] {} attempts created, {} answered 503 and retried",
        tally.created.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed)
    );
    let moved: HashMap<Uuid, HashSet<Uuid>> =
        movers.iter().map(|u| (*u, written[u].clone())).collect();
    assert!(
        moved.values().all(|ids| ids.len() >= 3),
        "the movers kept writing"
    );
    assert_users_whole_on(
        &cluster.b_url,
        &[&cluster.main.primary_url, &cluster.a_url],
        &moved,
    )
    .await;
    let stayed: HashMap<Uuid, HashSet<Uuid>> =
        [(bystanders[0], written[&bystanders[0]].clone())].into();
    assert_users_whole_on(&cluster.main.primary_url, &[&cluster.b_url], &stayed).await;
    // The instance routes the bucket to its new shard, and its reads agree.
    assert_eq!(
        app.state.db.shards().expect("sharded").shard_of(bucket),
        Some("shard-b")
    );
    let token = app
        .state
        .auth
        .jwt
        .issue(movers[0], "member")
        .expect("token")
        .token;
    let (status, progress) = get(&app, &token, "/api/v1/users/me/progress").await;
    assert_eq!(status, 200);
    assert_eq!(
        progress["attempts"].as_u64(),
        Some(moved[&movers[0]].len() as u64)
    );

    // And back to main, which clears main's old fence on the way.
    let report = mover::move_bucket(&mover_db, bucket, "main", &options)
        .await
        .expect("move back");
    mover_db.close().await;
    assert_eq!(report.source, "shard-b");
    assert_users_whole_on(&cluster.main.primary_url, &[&cluster.b_url], &moved).await;
    let (exercise_id, answer) = exercise(&app, 20).await;
    let (status, body, _) = post_attempt(&app, &token, exercise_id, &answer, None).await;
    assert_eq!(status, 201, "{body}");
    match Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("writers still hold the app"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_interrupted_at_any_point_leaves_data_readable_and_resumes() {
    let cluster = Cluster::start().await;
    let app = cluster.app().await;
    let bucket = bucket_of(Uuid::now_v7());
    let users = users_in_bucket(bucket, 6);
    let tokens = members(&app, &users).await;
    let mut written: HashMap<Uuid, HashSet<Uuid>> = HashMap::new();
    for (user, token) in users.iter().zip(&tokens) {
        for n in 0..4 {
            let (exercise_id, answer) = exercise(&app, n).await;
            let (status, body, _) = post_attempt(&app, token, exercise_id, &answer, None).await;
            assert_eq!(status, 201, "{body}");
            let id = body["attempt_id"]
                .as_str()
                .expect("id")
                .parse()
                .expect("uuid");
            written.entry(*user).or_default().insert(id);
        }
    }
    let options = mover::MoveOptions {
        grace: Duration::from_millis(200),
        announce: Some((services().redis_url(), format!("{}:", app.db.name))),
    };
    let urls: HashMap<&str, &str> = [
        ("main", cluster.main.primary_url.as_str()),
        ("shard-a", cluster.a_url.as_str()),
        ("shard-b", cluster.b_url.as_str()),
    ]
    .into();
    let mut here = "main";
    for (round, (target, cut_after_ms)) in [
        ("shard-a", 5),
        ("shard-b", 40),
        ("main", 120),
        ("shard-a", 400),
    ]
    .into_iter()
    .enumerate()
    {
        // The move dies part-way (its future dropped: its connections close,
        // as a killed process's would).
        let db = mover_db(&cluster);
        let options_for_task = options.clone();
        let task = tokio::spawn(async move {
            mover::move_bucket(&db, bucket, target, &options_for_task).await
        });
        tokio::time::sleep(Duration::from_millis(cut_after_ms)).await;
        task.abort();
        let _ = task.await;
        // Whatever it reached, every learner reads all of their progress.
        for (user, token) in users.iter().zip(&tokens) {
            let (status, progress) = get(&app, token, "/api/v1/users/me/progress").await;
            assert_eq!(status, 200, "round {round}: {progress}");
            assert_eq!(
                progress["attempts"].as_u64(),
                Some(written[user].len() as u64),
                "round {round} ({here} -> {target}, cut after {cut_after_ms} ms)"
            );
        }
        // Running the command again finishes the move.
        let db = mover_db(&cluster);
        let report = mover::move_bucket(&db, bucket, target, &options)
            .await
            .expect("resumed move");
        db.close().await;
        println!(
            "[shards] round {round}: {}",
            serde_json::to_string(&report).expect("json")
        );
        let others: Vec<&str> = urls
            .iter()
            .filter(|(name, _)| **name != target)
            .map(|(_, url)| *url)
            .collect();
        assert_users_whole_on(urls[target], &others, &written).await;
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM shard_moves")
            .fetch_one(app.state.db.write())
            .await
            .expect("moves");
        assert_eq!(left, 0, "round {round}: the move is recorded as done");
        // Writes work on the new home.
        let (exercise_id, answer) = exercise(&app, 10 + round as i64).await;
        let (status, body, _) = post_attempt(&app, &tokens[0], exercise_id, &answer, None).await;
        assert_eq!(status, 201, "round {round}: {body}");
        let id = body["attempt_id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid");
        written.entry(users[0]).or_default().insert(id);
        here = target;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_down_fails_only_its_users_and_ready_names_it() {
    let cluster = Cluster::start().await;
    cluster.spread_buckets().await;
    let app = cluster
        .builder()
        .unseeded()
        .env("DB_POOL_ACQUIRE_TIMEOUT", "1s")
        .env("HEALTH_CHECK_INTERVAL", "200ms")
        .start_on(cluster.main.clone())
        .await;
    let ids = [
        user_in(|b| spread_shard(b) == "main"),
        user_in(|b| spread_shard(b) == "shard-a"),
        user_in(|b| spread_shard(b) == "shard-b"),
    ];
    let tokens = members(&app, &ids).await;
    let (exercise_id, answer) = exercise(&app, 0).await;

    tokio::task::block_in_place(|| cluster.b_primary.stop());
    for (i, token) in tokens.iter().enumerate() {
        let (status, body, headers) = post_attempt(&app, token, exercise_id, &answer, None).await;
        if i == 2 {
            assert_eq!(status, 503, "shard-b's user: {body}");
            assert!(headers.contains_key("retry-after"));
            let (status, _) = get(&app, token, "/api/v1/users/me/progress").await;
            assert_eq!(status, 503);
        } else {
            assert_eq!(status, 201, "user {i} is not on shard-b: {body}");
        }
    }
    // The instance stays in the balancer (it serves everybody else), and says
    // which shard is down.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, ready) = app.get_json("/ready").await;
        assert_eq!(status, 200, "{ready}");
        let named = ready["reasons"].as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r.as_str().is_some_and(|r| r.contains("shard-b")))
        });
        if named {
            assert_eq!(ready["status"], "degraded");
            assert_eq!(
                ready["dependencies"]["shards"][1]["primary"]["status"],
                "down"
            );
            assert_eq!(
                ready["dependencies"]["shards"][0]["primary"]["status"],
                "up"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    tokio::task::block_in_place(|| cluster.b_primary.start());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body, _) = post_attempt(&app, &tokens[2], exercise_id, &answer, None).await;
        if status == 201 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "shard-b never came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.stop().await;
}

/// Runs the real `refbackend` with `args` against main and two fresh,
/// unmigrated shard databases: (exit code, stdout, stderr).
async fn cli(
    main: &TestDatabase,
    shard_urls: &str,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_refbackend"))
        .args(args)
        .env("APP_ENV", "test")
        .env("DATABASE_URL", &main.primary_url)
        .env("SHARD_URLS", shard_urls)
        .env("REDIS_URL", services().redis_url())
        .env("REDIS_KEY_PREFIX", format!("{}:", main.name))
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_shards_commands_migrate_list_plan_and_move_on_real_databases() {
    let main = services().create_database().await;
    let node = services().dedicated_primary().await;
    // Two empty databases: `migrate` and `seed` make them shards.
    let mut admin = PgConnection::connect(&node.url("postgres"))
        .await
        .expect("connect");
    let names = [
        format!("s_{}", Uuid::new_v4().simple()),
        format!("s_{}", Uuid::new_v4().simple()),
    ];
    for name in &names {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create");
    }
    let _ = admin.close().await;
    let urls = format!("s1={},s2={}", node.url(&names[0]), node.url(&names[1]));
    for command in [["migrate"].as_slice(), ["seed"].as_slice()] {
        let (code, _, err) = cli(&main, &urls, command).await;
        assert_eq!(code, Some(0), "{command:?}: {err}");
    }
    let s1 = PgPool::connect(&node.url(&names[0])).await.expect("s1");
    let copied: i64 = sqlx::query_scalar("SELECT count(*) FROM exercises")
        .fetch_one(&s1)
        .await
        .expect("exercises");
    assert!(
        copied > 1000,
        "seed copied the exercises to the shard: {copied}"
    );

    // 40 users, all on main for now.
    let main_pool = PgPool::connect(&main.primary_url).await.expect("main");
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, display_name)
         SELECT gen_random_uuid(), g || '@example.com', 'x', 'L' FROM generate_series(1, 40) g",
    )
    .execute(&main_pool)
    .await
    .expect("users");
    let (code, out, err) = cli(&main, &urls, &["shards", "list", "--json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let listed: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed["shards"][0]["shard"], "main");
    assert_eq!(listed["shards"][0]["buckets"], 1024);
    assert_eq!(listed["shards"][0]["users"], 40);
    assert_eq!(listed["shards"][1]["buckets"], 0);

    // The plan evens users out; a dry run moves nothing.
    let (code, out, err) = cli(&main, &urls, &["shards", "rebalance", "--dry-run"]).await;
    assert_eq!(code, Some(0), "{err}");
    let planned: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("move bucket"))
        .collect();
    assert!(planned.len() >= 10, "{out}");
    assert!(
        planned.iter().any(|l| l.ends_with("-> s1"))
            && planned.iter().any(|l| l.ends_with("-> s2"))
    );
    let mapped: i64 = sqlx::query_scalar("SELECT count(*) FROM shard_map")
        .fetch_one(&main_pool)
        .await
        .expect("map");
    assert_eq!(mapped, 0, "a dry run changes nothing");

    // One real move through the command, of a learner with history from a
    // quarter long gone (its own partition on main).
    let (mover, bucket): (Uuid, i32) =
        sqlx::query_as("SELECT id, shard_bucket(id) FROM users LIMIT 1")
            .fetch_one(&main_pool)
            .await
            .expect("bucket");
    sqlx::query(
        "CREATE TABLE attempts_2024q1 PARTITION OF attempts
             FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2024-04-01 00:00:00+00')",
    )
    .execute(&main_pool)
    .await
    .expect("old partition");
    let old_attempt = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO attempts (user_id, created_at, id, exercise_id, answer, outcome,
                               counts_as_correct, xp)
         VALUES ($1, '2024-02-10 12:00:00+00', $2, (SELECT min(id) FROM exercises), 'x',
                 'incorrect', false, 0)",
    )
    .bind(mover)
    .bind(old_attempt)
    .execute(&main_pool)
    .await
    .expect("old attempt");
    let (code, out, err) = cli(
        &main,
        &urls,
        &[
            "shards",
            "move",
            "--bucket",
            &bucket.to_string(),
            "--to",
            "s2",
            "--grace",
            "0s",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let report: Value = serde_json::from_str(&out).expect("report");
    assert_eq!(report["source"], "main");
    assert_eq!(report["target"], "s2");
    let s2 = PgPool::connect(&node.url(&names[1])).await.expect("s2");
    let home: String =
        sqlx::query_scalar("SELECT tableoid::regclass::text FROM attempts WHERE id = $1")
            .bind(old_attempt)
            .fetch_one(&s2)
            .await
            .expect("the old attempt moved");
    assert_eq!(
        home, "attempts_2024q1",
        "old history lands in its own partition"
    );
    s2.close().await;
    let (_, out, _) = cli(&main, &urls, &["shards", "list", "--json"]).await;
    let listed: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed["shards"][2]["buckets"], 1, "{listed}");
    assert_eq!(listed["moves"].as_array().map(Vec::len), Some(0));

    // Rebalancing for real evens the users out (within one bucket's worth).
    let (code, _, err) = cli(
        &main,
        &urls,
        &["shards", "rebalance", "--apply", "--grace", "0s"],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let (_, out, _) = cli(&main, &urls, &["shards", "list", "--json"]).await;
    let listed: Value = serde_json::from_str(&out).expect("json");
    let users: Vec<i64> = listed["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| s["users"].as_i64().expect("users"))
        .collect();
    assert_eq!(users.iter().sum::<i64>(), 40, "{listed}");
    let biggest_bucket: i64 = sqlx::query_scalar(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM users GROUP BY shard_bucket(id)) b",
    )
    .fetch_one(&main_pool)
    .await
    .expect("buckets");
    let (min, max) = (
        users.iter().min().copied().unwrap_or(0),
        users.iter().max().copied().unwrap_or(0),
    );
    assert!(
        max - min <= biggest_bucket,
        "{users:?} (largest bucket {biggest_bucket})"
    );
    // The old attempt exists once, wherever its bucket ended up.
    let mut copies = 0_i64;
    for url in [
        main.primary_url.clone(),
        node.url(&names[0]),
        node.url(&names[1]),
    ] {
        let pool = PgPool::connect(&url).await.expect("connect");
        copies += sqlx::query_scalar::<_, i64>("SELECT count(*) FROM attempts WHERE id = $1")
            .bind(old_attempt)
            .fetch_one(&pool)
            .await
            .expect("count");
        pool.close().await;
    }
    assert_eq!(copies, 1, "moved whole, never doubled");

    // Through PgBouncer these commands would lose their advisory locks: refused.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_refbackend"))
        .args(["shards", "list"])
        .env("APP_ENV", "test")
        .env("DATABASE_URL", &main.primary_url)
        .env("DB_BEHIND_PGBOUNCER", "true")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("DB_BEHIND_PGBOUNCER"));
    s1.close().await;
    main_pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_account_on_a_shard_leaves_no_row_there_and_refuses_a_late_write() {
    let cluster = Cluster::start().await;
    cluster.spread_buckets().await;
    let app = cluster.app().await;
    let id = user_in(|b| spread_shard(b) == "shard-a");
    let hash = app
        .state
        .auth
        .passwords
        .hash("correct horse battery")
        .await
        .expect("hash");
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, display_name) VALUES ($1, $2, $3, 'Leaver')",
    )
    .bind(id)
    .bind(format!("{id}@example.com"))
    .bind(&hash)
    .execute(app.state.db.write())
    .await
    .expect("user");
    let token = app.state.auth.jwt.issue(id, "member").expect("token").token;
    let (exercise_id, answer) = exercise(&app, 0).await;
    let (status, first, _) = post_attempt(&app, &token, exercise_id, &answer, Some("k")).await;
    assert_eq!(status, 201, "{first}");
    assert!(rows_of(&cluster.a_url, id).await["attempts"] == 1);

    // A write of the account that passed the fence just before the deletion
    // (it holds the bucket's lock in shared mode) and commits after the
    // deletion started: the deletion waits for it, so it cannot survive.
    let shard = PgPool::connect(&cluster.a_url).await.expect("shard");
    let mut late = shard.begin().await.expect("begin");
    let fence: String = sqlx::query_scalar("SELECT shard_write_guard($1, $2)")
        .bind(i32::from(bucket_of(id)))
        .bind(id)
        .fetch_one(&mut *late)
        .await
        .expect("guard");
    assert_eq!(fence, "owned");
    let deleting = tokio::spawn({
        let (client, url, token) = (
            app.client.clone(),
            app.url("/api/v1/users/me"),
            token.clone(),
        );
        async move {
            client
                .delete(url)
                .bearer_auth(token)
                .json(&json!({"password": "correct horse battery"}))
                .send()
                .await
                .expect("delete")
                .status()
                .as_u16()
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                             WHERE wait_event_type = 'Lock' AND wait_event = 'advisory')",
        )
        .fetch_one(&shard)
        .await
        .expect("activity");
        if waiting {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deletion never waited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query(
        "INSERT INTO user_weekly_xp (user_id, week, xp) VALUES ($1, date_trunc('week', now())::date, 5)
         ON CONFLICT (user_id, week) DO UPDATE SET xp = user_weekly_xp.xp + 5",
    )
        .bind(id)
        .execute(&mut *late)
        .await
        .expect("late write");
    late.commit().await.expect("commit");
    assert_eq!(deleting.await.expect("task"), 204);
    for url in [
        cluster.main.primary_url.as_str(),
        cluster.a_url.as_str(),
        cluster.b_url.as_str(),
    ] {
        let rows = rows_of(url, id).await;
        assert!(
            rows.iter()
                .all(|(table, n)| *n == 0 || *table == "erased_users"),
            "{url}: {rows:?}"
        );
    }
    // The marker on the shard turns away a write that passed its account
    // check before the deletion (the fence reports the account erased).
    let fence: String = sqlx::query_scalar("SELECT shard_write_guard($1, $2)")
        .bind(i32::from(bucket_of(id)))
        .bind(id)
        .fetch_one(&shard)
        .await
        .expect("guard");
    assert_eq!(fence, "erased");
    let user_db = app.state.db.user(id).expect("shard");
    let refused = user_db.check_fence(&fence).expect_err("refused");
    assert_eq!(
        axum::response::IntoResponse::into_response(refused).status(),
        401
    );
    // Maintenance drops the marker once no request can still be running.
    sqlx::query("UPDATE erased_users SET erased_at = now() - interval '2 hours'")
        .execute(&shard)
        .await
        .expect("age");
    refbackend::maintenance::run_once(&app.state).await;
    assert!(rows_of(&cluster.a_url, id).await.values().all(|n| *n == 0));
    shard.close().await;
    app.stop().await;
}
