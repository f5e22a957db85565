//! Chaos tests: the real app under concurrent load while the network to a real
//! dependency is cut or blackholed by a [`ChaosProxy`], or the dependency's
//! process is killed. Every request of the load is recorded, and each test
//! asserts exactly how many failed (usually none) and how.
//!
//! Shape of every test: start the load, wait until it really uses the dependency,
//! break it, wait until the app has noticed *and* the load has gone on for a while,
//! heal, wait until the app uses the dependency again, stop the load, count.
//! Nothing sleeps a fixed time: every wait polls with a deadline.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::chaos_proxy::ChaosProxy;
use crate::services::{TestDatabase, services};
use crate::support::{TestApp, TestAppBuilder};

/// Concurrent client tasks hammering the app.
const WORKERS: usize = 12;
/// How long any one wait for the app to notice something may take.
const NOTICE: Duration = Duration::from_secs(10);
/// How long a restarted replica may take to catch up with its primary.
const CATCH_UP: Duration = Duration::from_secs(90);
/// The fail-fast bound for a refused write (its acquire timeout is 500 ms).
/// The writes here are registrations and the requests logins, which hash a
/// password first — queued behind the other workers' hashes on a loaded
/// 2-core CI box (measured up to 3.5 s there). The bound guards against the
/// 30 s hang, not against a slow hash.
const FAIL_FAST: Duration = Duration::from_secs(5);
const PASSWORD: &str = "correct horse battery";

// ---------------------------------------------------------------------------
// The load generator
// ---------------------------------------------------------------------------

/// One kind of request the load sends.
#[derive(Debug, Clone)]
enum Call {
    ListCities,
    GetCity(i64),
    /// A registration with a fresh email.
    Register,
    Login {
        email: String,
        password: String,
    },
    /// An up-vote on a question (a write that hashes no password).
    Vote {
        token: String,
        question: String,
    },
}

impl Call {
    fn kind(&self) -> &'static str {
        match self {
            Call::ListCities => "list-cities",
            Call::GetCity(_) => "get-city",
            Call::Register => "register",
            Call::Login { password, .. } if password == PASSWORD => "login-ok",
            Call::Login { .. } => "login-wrong",
            Call::Vote { .. } => "vote",
        }
    }
}

/// What happened to one request.
#[derive(Debug, Clone)]
struct Outcome {
    kind: &'static str,
    started: Instant,
    elapsed: Duration,
    /// None: no HTTP answer at all (connection error, client timeout).
    status: Option<u16>,
    problem_json: bool,
    retry_after: bool,
    /// The error or the start of the body, for failure messages.
    detail: String,
}

impl Outcome {
    fn finished(&self) -> Instant {
        self.started + self.elapsed
    }
}

/// Worker tasks sending `calls` in a loop until stopped; every outcome is kept.
struct Load {
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicU64>,
    /// When each worker's request in flight started, in µs since `epoch`.
    in_flight: Arc<Vec<AtomicU64>>,
    epoch: Instant,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    /// `workers` tasks; task `i` sends `calls[i % len]`, so each kind of call
    /// gets its own share of the concurrency.
    fn start(app: &TestApp, workers: usize, calls: Vec<Call>) -> Load {
        assert!(!calls.is_empty());
        let stop = Arc::new(AtomicBool::new(false));
        let completed = Arc::new(AtomicU64::new(0));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let epoch = Instant::now();
        let in_flight: Arc<Vec<AtomicU64>> =
            Arc::new((0..workers).map(|_| AtomicU64::new(0)).collect());
        // The app's own timeout answers before this one; it only catches hangs.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("load client");
        let base = format!("http://{}", app.addr);
        let workers = (0..workers)
            .map(|i| {
                let call = calls[i % calls.len()].clone();
                let (client, base) = (client.clone(), base.clone());
                let (stop, completed, outcomes) =
                    (stop.clone(), completed.clone(), outcomes.clone());
                let in_flight = in_flight.clone();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        in_flight[i].store(micros_since(epoch), Ordering::Relaxed);
                        let outcome = send(&client, &base, &call).await;
                        outcomes.lock().expect("outcomes").push(outcome);
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Load {
            stop,
            completed,
            in_flight,
            epoch,
            outcomes,
            workers,
        }
    }

    fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> Vec<Outcome> {
        self.outcomes.lock().expect("outcomes").clone()
    }

    /// Waits until `n` more requests have completed than when called.
    async fn run_for(&self, n: u64, what: &str) {
        let target = self.completed() + n;
        let deadline = Instant::now() + NOTICE * 2;
        while self.completed() < target {
            assert!(
                Instant::now() < deadline,
                "the load stalled ({what}): {} of {target} requests completed",
                self.completed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until no request that started before `since` is still in flight:
    /// every request caught by a fault has answered, one way or another.
    async fn settle(&self, since: Instant, what: &str) {
        let since = since.saturating_duration_since(self.epoch).as_micros();
        let since = u64::try_from(since).unwrap_or(u64::MAX);
        let deadline = Instant::now() + NOTICE * 2;
        while self
            .in_flight
            .iter()
            .any(|started| started.load(Ordering::Relaxed) < since)
        {
            assert!(
                Instant::now() < deadline,
                "requests caught by the fault never answered ({what})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the workers (each finishes its request in flight) and returns
    /// every outcome.
    async fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.expect("load worker");
        }
        Arc::try_unwrap(self.outcomes)
            .expect("workers are done")
            .into_inner()
            .expect("outcomes")
    }
}

fn micros_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

async fn send(client: &reqwest::Client, base: &str, call: &Call) -> Outcome {
    let request = match call {
        Call::ListCities => client.get(format!("{base}/api/v1/cities?limit=5")),
        Call::GetCity(id) => client.get(format!("{base}/api/v1/cities/{id}")),
        Call::Register => client
            .post(format!("{base}/api/v1/auth/register"))
            .json(&json!({
                "email": format!("chaos-{}@example.com", uuid::Uuid::new_v4().simple()),
                "password": PASSWORD,
                "display_name": "Chaos",
            })),
        Call::Login { email, password } => client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password})),
        Call::Vote { token, question } => client
            .put(format!("{base}/api/v1/questions/{question}/vote"))
            .bearer_auth(token)
            .json(&json!({"value": 1})),
    };
    let started = Instant::now();
    let result = request.send().await;
    let mut outcome = Outcome {
        kind: call.kind(),
        started,
        elapsed: Duration::ZERO,
        status: None,
        problem_json: false,
        retry_after: false,
        detail: String::new(),
    };
    match result {
        Ok(response) => {
            outcome.status = Some(response.status().as_u16());
            outcome.problem_json = response
                .headers()
                .get("content-type")
                .is_some_and(|v| v == "application/problem+json");
            outcome.retry_after = response.headers().contains_key("retry-after");
            let body = response.text().await.unwrap_or_default();
            outcome.detail = body.chars().take(200).collect();
        }
        Err(e) => outcome.detail = e.to_string(),
    }
    outcome.elapsed = started.elapsed();
    outcome
}

/// The status each kind of call must answer when nothing is wrong with it.
fn expected_status(kind: &str) -> u16 {
    match kind {
        "register" => 201,
        "login-wrong" => 401,
        _ => 200,
    }
}

/// Outcomes whose status is not the expected one.
fn unexpected<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> Vec<&'a Outcome> {
    outcomes
        .into_iter()
        .filter(|o| o.status != Some(expected_status(o.kind)))
        .collect()
}

fn max_elapsed<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> Duration {
    outcomes
        .into_iter()
        .map(|o| o.elapsed)
        .max()
        .unwrap_or_default()
}

/// A one-line account of the load, printed for the record (`--nocapture`).
fn summary(test: &str, outcomes: &[Outcome]) -> String {
    let mut kinds: Vec<&str> = outcomes.iter().map(|o| o.kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let per_kind: Vec<String> = kinds
        .iter()
        .map(|kind| {
            let of_kind: Vec<&Outcome> = outcomes.iter().filter(|o| o.kind == *kind).collect();
            format!(
                "{kind}: {} sent, {} unexpected, max {:?}",
                of_kind.len(),
                unexpected(of_kind.iter().copied()).len(),
                max_elapsed(of_kind.iter().copied())
            )
        })
        .collect();
    format!("[chaos] {test}: {}", per_kind.join("; "))
}

fn assert_none_failed(test: &str, outcomes: &[Outcome]) {
    let failed = unexpected(outcomes);
    assert!(
        failed.is_empty(),
        "{}\n{} of {} requests failed, first ones: {:#?}",
        summary(test, outcomes),
        failed.len(),
        outcomes.len(),
        &failed[..failed.len().min(5)]
    );
}

// ---------------------------------------------------------------------------
// Helpers for apps, metrics and readiness
// ---------------------------------------------------------------------------

/// A database URL for `name` through `proxy`.
fn url_via(proxy: &ChaosProxy, name: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{}/{name}", proxy.port())
}

/// Public reads: a page of cities and a few cities by id (ids read from the app).
async fn read_calls(app: &TestApp) -> Vec<Call> {
    let (status, page) = app.get_json("/api/v1/cities?limit=3").await;
    assert_eq!(status, 200, "{page}");
    let mut calls = vec![Call::ListCities];
    for city in page["items"].as_array().expect("items") {
        calls.push(Call::GetCity(city["id"].as_i64().expect("id")));
    }
    assert_eq!(calls.len(), 4, "three cities to read: {page}");
    calls
}

/// Polls `probe` every 50 ms until it returns true, or panics after `timeout`.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !probe().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn replica_in_rotation(body: &Value) -> Option<bool> {
    body["dependencies"]["replicas"][0]["in_rotation"].as_bool()
}

/// Reads served by the replica pool so far.
async fn replica_reads(app: &TestApp) -> f64 {
    app.metric("db_reads_total", &[("pool", "replica-0")]).await
}

async fn fallbacks(app: &TestApp) -> f64 {
    app.metric("db_read_fallbacks_total", &[]).await
}

/// Waits until the replica pool has served `n` more reads than now.
async fn wait_for_replica_reads(app: &TestApp, n: f64, what: &str) {
    wait_for_replica_reads_within(app, n, what, NOTICE).await;
}

async fn wait_for_replica_reads_within(app: &TestApp, n: f64, what: &str, within: Duration) {
    let target = replica_reads(app).await + n;
    eventually(what, within, || async move {
        replica_reads(app).await >= target
    })
    .await;
}

/// Builder settings shared by the chaos apps: no rate limit gets in the way of
/// the load (the limiter still runs and still counts its decisions).
fn chaos_builder() -> TestAppBuilder {
    TestApp::builder()
        .env("RATE_LIMIT_REGISTER_IP", "1000000/1m")
        .env("RATE_LIMIT_LOGIN_IP", "1000000/1m")
        .env("RATE_LIMIT_LOGIN_ACCOUNT", "1000000/1m")
}

/// For database faults: without the cache every read really reaches a database.
fn uncached_builder() -> TestAppBuilder {
    chaos_builder().env("CACHE_ENABLED", "false")
}

// ---------------------------------------------------------------------------
// Replica failures
// ---------------------------------------------------------------------------

/// An app whose replica is the shared one, reached through a proxy. A read
/// waits at most 1 s (acquire) + 2 s (statement) + 0.5 s on a silent replica
/// before it is retried on the primary.
async fn app_with_proxied_replica(builder: TestAppBuilder) -> (TestApp, ChaosProxy) {
    let db = services().create_database().await;
    let proxy = ChaosProxy::to_port(services().replica.port()).await;
    let db = TestDatabase {
        replica_url: url_via(&proxy, &db.name),
        ..db
    };
    let app = builder
        .env("DB_REPLICA_POOL_STATEMENT_TIMEOUT", "2s")
        .start_on(db)
        .await;
    app.wait_for_ready("replica in rotation", NOTICE, |b| {
        replica_in_rotation(b) == Some(true)
    })
    .await;
    (app, proxy)
}

/// Runs the replica scenario: load, `break_it`, noticed, heal, back; 0 failures.
async fn replica_scenario(
    test: &str,
    app: &TestApp,
    proxy: &ChaosProxy,
    break_it: fn(&ChaosProxy),
) -> Vec<Outcome> {
    let load = Load::start(app, WORKERS, read_calls(app).await);
    wait_for_replica_reads(app, 50.0, "reads on the replica before the fault").await;

    break_it(proxy);
    let broken_at = Instant::now();
    app.wait_for_ready("replica out of rotation", NOTICE, |b| {
        replica_in_rotation(b) == Some(false)
    })
    .await;
    load.settle(broken_at, "reads caught by the fault").await;
    load.run_for(200, "reads while the replica is unreachable")
        .await;
    let (status, body) = app.get_json("/ready").await;
    assert_eq!(status, 200, "degraded, still serving: {body}");
    assert_eq!(body["status"], "degraded");
    assert!(fallbacks(app).await >= 1.0);

    proxy.heal();
    app.wait_for_ready("replica back in rotation", NOTICE, |b| {
        replica_in_rotation(b) == Some(true)
    })
    .await;
    assert_eq!(
        app.metric("db_replica_in_rotation", &[("replica", "replica-0")])
            .await,
        1.0
    );
    wait_for_replica_reads(app, 50.0, "reads on the replica after the heal").await;
    assert!(proxy.connections() >= 1, "the replica pool reconnected");

    let outcomes = load.stop().await;
    eprintln!(
        "{} (fallbacks: {})",
        summary(test, &outcomes),
        fallbacks(app).await
    );
    assert_none_failed(test, &outcomes);
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_a_replica_cut_with_no_failures() {
    let (app, proxy) = app_with_proxied_replica(uncached_builder()).await;
    replica_scenario(
        "reads_survive_a_replica_cut_with_no_failures",
        &app,
        &proxy,
        ChaosProxy::cut,
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_a_replica_blackhole_with_no_failures() {
    let test = "reads_survive_a_replica_blackhole_with_no_failures";
    let (app, proxy) = app_with_proxied_replica(uncached_builder()).await;
    let outcomes = replica_scenario(test, &app, &proxy, ChaosProxy::blackhole).await;
    // Reads caught by the partition waited for the silent replica at most its
    // acquire + statement timeouts + 0.5 s (3.5 s here), then were retried on
    // the primary: well within the 10 s request timeout they would otherwise
    // hit.
    let slowest = max_elapsed(&outcomes);
    assert!(
        slowest < Duration::from_secs(5),
        "{test}: a read took {slowest:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_a_killed_replica_process_and_return_to_it_after_restart() {
    let test = "reads_survive_a_killed_replica_process_and_return_to_it_after_restart";
    let pair = services().replicated_pair().await;
    let replica = &pair.replica;
    let app = uncached_builder().start_on(pair.db.clone()).await;
    app.wait_for_ready("replica in rotation", NOTICE, |b| {
        replica_in_rotation(b) == Some(true)
    })
    .await;
    let load = Load::start(&app, WORKERS, read_calls(&app).await);
    wait_for_replica_reads(&app, 50.0, "reads on the replica before the kill").await;

    tokio::task::block_in_place(|| replica.kill());
    let killed_at = Instant::now();
    app.wait_for_ready("killed replica out of rotation", NOTICE, |b| {
        replica_in_rotation(b) == Some(false)
    })
    .await;
    load.settle(killed_at, "reads caught by the kill").await;
    load.run_for(200, "reads while the replica is dead").await;

    tokio::task::block_in_place(|| replica.start());
    // A replica killed with `immediate` recovers, then replays what its
    // primary wrote meanwhile; on a loaded 2-core CI box that can take longer
    // than the 2 s lag bound. What is tested is that reads come back to it
    // without a failure, not how fast it catches up.
    app.wait_for_ready("restarted replica back in rotation", CATCH_UP, |b| {
        replica_in_rotation(b) == Some(true)
    })
    .await;
    wait_for_replica_reads_within(&app, 50.0, "reads on the restarted replica", CATCH_UP).await;

    let outcomes = load.stop().await;
    eprintln!(
        "{} (fallbacks: {})",
        summary(test, &outcomes),
        fallbacks(&app).await
    );
    assert_none_failed(test, &outcomes);
    app.stop().await;
}

// ---------------------------------------------------------------------------
// Primary failures
// ---------------------------------------------------------------------------

/// An app whose primary is reached through a proxy; reads go to the shared
/// replica directly. Writes give up on the pool after 500 ms.
async fn app_with_proxied_primary(builder: TestAppBuilder) -> (TestApp, ChaosProxy) {
    let db = services().create_database().await;
    let proxy = ChaosProxy::to_port(services().primary.port()).await;
    let db = TestDatabase {
        primary_url: url_via(&proxy, &db.name),
        ..db
    };
    let app = builder
        .env("DB_POOL_ACQUIRE_TIMEOUT", "500ms")
        .start_on(db)
        .await;
    app.wait_for_ready("replica in rotation", NOTICE, |b| {
        replica_in_rotation(b) == Some(true)
    })
    .await;
    (app, proxy)
}

/// Readers on the replica plus writers registering fresh accounts: of the 12
/// workers, 2 write (as many as hash passwords at once, so a write's latency is
/// its own hashing plus the database, not a queue).
fn primary_load(app: &TestApp, reads: Vec<Call>) -> Load {
    let calls = (0..WORKERS)
        .map(|i| {
            if i % 6 == 2 {
                Call::Register
            } else {
                reads[i % reads.len()].clone()
            }
        })
        .collect();
    Load::start(app, WORKERS, calls)
}

/// The outcomes of every kind of call but `kind`.
fn except(outcomes: &[Outcome], kind: &str) -> Vec<Outcome> {
    outcomes
        .iter()
        .filter(|o| o.kind != kind)
        .cloned()
        .collect()
}

/// Polls `/ready` every 20 ms and keeps every report in which the replica is
/// out of rotation.
struct RotationWatch {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<Value>>,
}

impl RotationWatch {
    fn start(app: &TestApp) -> RotationWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let (client, url) = (app.client.clone(), app.url("/ready"));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut out = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(response) = client.get(&url).send().await
                    && let Ok(body) = response.json::<Value>().await
                    && replica_in_rotation(&body) == Some(false)
                {
                    out.push(body);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            out
        });
        RotationWatch { stop, task }
    }

    async fn stop(self) -> Vec<Value> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("rotation watch")
    }
}

/// Waits until `n` registrations that started after `since` have answered
/// with `status` (any status when None).
async fn wait_for_writes(load: &Load, since: Instant, status: Option<u16>, n: usize, what: &str) {
    wait_for_calls(load, "register", since, status, n, what).await;
}

/// Waits until `n` calls of `kind` that started after `since` have answered
/// with `status` (any status when None).
async fn wait_for_calls(
    load: &Load,
    kind: &str,
    since: Instant,
    status: Option<u16>,
    n: usize,
    what: &str,
) {
    eventually(what, NOTICE * 2, || async move {
        load.snapshot()
            .iter()
            .filter(|o| o.kind == kind && o.started >= since)
            .filter(|o| status.is_none() || o.status == status)
            .count()
            >= n
    })
    .await;
}

/// The checks of a refused write: a 503 problem with Retry-After.
fn assert_clean_503(test: &str, o: &Outcome) {
    assert_eq!(o.status, Some(503), "{test}: {o:#?}");
    assert!(o.problem_json, "{test}: not problem+json: {o:#?}");
    assert!(o.retry_after, "{test}: no Retry-After: {o:#?}");
}

/// The primary scenario: reads and writes; `break_it`; every request caught by
/// the fault answers; writes go on failing for a while; heal; writes succeed
/// again. Reads never fail. Returns the outcomes with the fault and heal times.
async fn primary_scenario(
    test: &str,
    app: &TestApp,
    proxy: &ChaosProxy,
    break_it: fn(&ChaosProxy),
) -> (Vec<Outcome>, Instant, Instant) {
    let load = primary_load(app, read_calls(app).await);
    let rotation = RotationWatch::start(app);
    let started = Instant::now();
    wait_for_writes(&load, started, Some(201), 10, "writes before the fault").await;

    break_it(proxy);
    let broken_at = Instant::now();
    app.wait_for_ready("primary reported down", NOTICE, |b| {
        b["dependencies"]["primary"]["status"] == "down"
    })
    .await;
    load.settle(broken_at, "requests caught by the fault").await;
    let settled_at = Instant::now();
    wait_for_writes(&load, settled_at, None, 12, "writes during the outage").await;
    let (status, body) = app.get_json("/ready").await;
    assert_eq!(status, 200, "reads still served, so degraded: {body}");
    assert_eq!(body["status"], "degraded");

    proxy.heal();
    let healed_at = Instant::now();
    wait_for_writes(&load, healed_at, Some(201), 10, "writes after the heal").await;
    let outcomes = load.stop().await;
    eprintln!("{}", summary(test, &outcomes));
    // Reads never failed: they are served by the replica, which never left the
    // rotation (not one read fell back to the unreachable primary).
    let left = rotation.stop().await;
    assert!(
        left.is_empty(),
        "{test}: the replica left the rotation: {left:#?}"
    );
    assert_eq!(fallbacks(app).await, 0.0, "{test}");
    assert_none_failed(test, &except(&outcomes, "register"));
    // Every write that failed, failed cleanly.
    for o in unexpected(outcomes.iter().filter(|o| o.kind == "register")) {
        assert_clean_503(test, o);
    }
    (outcomes, broken_at, healed_at)
}

/// Writes by when they ran: (before the fault, started during the outage and
/// answered before the heal, started after the heal).
fn writes_by_phase(
    outcomes: &[Outcome],
    broken_at: Instant,
    healed_at: Instant,
) -> (Vec<&Outcome>, Vec<&Outcome>, Vec<&Outcome>) {
    let writes = || outcomes.iter().filter(|o| o.kind == "register");
    (
        writes().filter(|o| o.finished() < broken_at).collect(),
        writes()
            .filter(|o| o.started > broken_at && o.finished() < healed_at)
            .collect(),
        writes().filter(|o| o.started > healed_at).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_fail_fast_with_503_while_the_primary_is_cut_and_recover_after_heal() {
    let test = "writes_fail_fast_with_503_while_the_primary_is_cut_and_recover_after_heal";
    let (app, proxy) = app_with_proxied_primary(uncached_builder()).await;
    let (outcomes, cut_at, healed_at) = primary_scenario(test, &app, &proxy, ChaosProxy::cut).await;

    let (before, during, after) = writes_by_phase(&outcomes, cut_at, healed_at);
    assert!(unexpected(before.iter().copied()).is_empty(), "{before:#?}");
    assert!(unexpected(after.iter().copied()).is_empty(), "{after:#?}");
    assert!(!during.is_empty());
    for o in &during {
        assert_clean_503(test, o);
    }
    // A cut connection fails at once, so even the writes caught by the cut
    // answered fast.
    let refused = unexpected(outcomes.iter().filter(|o| o.kind == "register"));
    let slowest = max_elapsed(refused.iter().copied());
    eprintln!(
        "[chaos] {test}: writes: {} before the cut (all 201), {} during the outage (all 503), \
         {} refused in all (slowest {slowest:?}), {} after the heal (all 201)",
        before.len(),
        during.len(),
        refused.len(),
        after.len()
    );
    assert!(slowest < FAIL_FAST, "{test}: a refusal took {slowest:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_fail_fast_with_503_while_the_primary_is_blackholed() {
    let test = "writes_fail_fast_with_503_while_the_primary_is_blackholed";
    // A write caught mid-transaction by the partition waits for an answer that
    // never comes; only the request timeout ends it (see below). 3 s keeps the
    // test short.
    let (app, proxy) =
        app_with_proxied_primary(uncached_builder().env("HTTP_REQUEST_TIMEOUT", "3s")).await;
    let (outcomes, blackholed_at, healed_at) =
        primary_scenario(test, &app, &proxy, ChaosProxy::blackhole).await;

    let (before, during, after) = writes_by_phase(&outcomes, blackholed_at, healed_at);
    assert!(unexpected(before.iter().copied()).is_empty(), "{before:#?}");
    assert!(!during.is_empty());
    // Writes that start while the primary is silent fail fast: the pool's
    // connection check (a ping) gets no answer and the acquire times out.
    for o in &during {
        assert_clean_503(test, o);
        assert!(o.elapsed < FAIL_FAST, "{test}: slow refusal {o:#?}");
    }
    // Writes that were waiting on the primary when it went silent cannot know it
    // is gone: they answer 503 when the request timeout (3 s here) fires.
    let caught: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| {
            o.kind == "register" && o.started < blackholed_at && o.finished() > blackholed_at
        })
        .collect();
    for o in &caught {
        assert!(
            o.status == Some(201) || o.elapsed < Duration::from_secs(4),
            "{test}: {o:#?}"
        );
    }
    // After the heal, writes that waited on the held connections may still
    // answer 503 until the pool has replaced them; then every write succeeds
    // (checked by the scenario: 10 successes after the heal).
    eprintln!(
        "[chaos] {test}: writes: {} before the blackhole (all 201), {} started during it \
         (all 503, slowest {:?}), {} caught in flight by it (slowest {:?}, statuses {:?}), \
         {} after the heal ({} not 201)",
        before.len(),
        during.len(),
        max_elapsed(during.iter().copied()),
        caught.len(),
        max_elapsed(caught.iter().copied()),
        caught.iter().map(|o| o.status).collect::<Vec<_>>(),
        after.len(),
        unexpected(after.iter().copied()).len(),
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------
// A killed primary process
// ---------------------------------------------------------------------------

/// How long a refused vote may take: the pool's acquire timeout (500 ms here)
/// plus slack for a loaded 2-core box. A vote hashes no password, so this can
/// be much tighter than [`FAIL_FAST`]; a hang would be the 30 s of a default
/// acquire timeout.
const VOTE_REFUSAL: Duration = Duration::from_secs(2);

/// `n` voters, each with a question of their own (so votes do not queue on
/// one row lock): one `Call::Vote` each. Users are inserted directly (no
/// password hashing), questions posted through the API.
async fn vote_calls(app: &TestApp, n: usize) -> Vec<Call> {
    let mut calls = Vec::with_capacity(n);
    for i in 0..n {
        let (_, token) = app
            .users_with_role(1, "member")
            .await
            .pop()
            .expect("one user");
        let response = app
            .client
            .post(app.url("/api/v1/cities/1/questions"))
            .bearer_auth(&token)
            .json(
                &json!({"body": format!("Chaos question number {i}: will the buses run on time?")}),
            )
            .send()
            .await
            .expect("ask");
        assert_eq!(response.status(), 201);
        let created: Value = response.json().await.expect("json");
        let question = created["question"]["id"]
            .as_str()
            .expect("question id")
            .to_owned();
        calls.push(Call::Vote { token, question });
    }
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_get_503_while_the_primary_process_is_killed_and_resume_after_its_restart() {
    let test = "writes_get_503_while_the_primary_process_is_killed_and_resume_after_its_restart";
    // A primary and a replica of its own: the shared primary must stay up.
    let pair = services().replicated_pair().await;
    let primary = &pair.primary;
    let app = uncached_builder()
        .env("DB_POOL_ACQUIRE_TIMEOUT", "500ms")
        .env("RATE_LIMIT_VOTES_USER", "1000000/1h")
        .start_on(pair.db.clone())
        .await;
    app.wait_for_ready("replica in rotation", NOTICE, |b| {
        replica_in_rotation(b) == Some(true)
    })
    .await;
    // Of the 12 workers, 2 vote (each on its own question), 10 read.
    let votes = vote_calls(&app, 2).await;
    let reads = read_calls(&app).await;
    let calls = (0..WORKERS)
        .map(|i| {
            if i % 6 == 2 {
                votes[i / 6].clone()
            } else {
                reads[i % reads.len()].clone()
            }
        })
        .collect();
    let load = Load::start(&app, WORKERS, calls);
    let started = Instant::now();
    wait_for_calls(
        &load,
        "vote",
        started,
        Some(200),
        10,
        "votes before the kill",
    )
    .await;
    wait_for_replica_reads(&app, 50.0, "reads on the replica before the kill").await;

    // A crash: no shutdown checkpoint, every connection dropped at once.
    // `pg_ctl stop` returns once the server is gone: requests may fail from
    // the moment it is called.
    let rotation = RotationWatch::start(&app);
    let kill_started = Instant::now();
    tokio::task::block_in_place(|| primary.kill());
    let killed_at = Instant::now();
    app.wait_for_ready("primary reported down", NOTICE, |b| {
        b["dependencies"]["primary"]["status"] == "down"
    })
    .await;
    load.settle(kill_started, "requests caught by the kill")
        .await;
    let settled_at = Instant::now();
    let replica_reads_settled = replica_reads(&app).await;
    wait_for_calls(
        &load,
        "vote",
        settled_at,
        Some(503),
        12,
        "refused votes while the primary is dead",
    )
    .await;
    load.run_for(200, "reads while the primary is dead").await;
    // Longer than the replica lag bound (2 s) and a few checks: a replica
    // wrongly judged to lag would have left the rotation by now. (A crash can
    // leave the start of a WAL record on the replica that it can never replay.)
    tokio::time::sleep_until(killed_at + Duration::from_millis(2_500)).await;
    let replica_reads_during = replica_reads(&app).await - replica_reads_settled;
    let (status, body) = app.get_json("/ready").await;
    assert_eq!(status, 200, "reads still served, so degraded: {body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["dependencies"]["primary"]["status"], "down", "{body}");
    let unreplayable = body["dependencies"]["replicas"][0]["lag_bytes"].clone();
    let left = rotation.stop().await;
    assert!(
        left.is_empty(),
        "{test}: the replica left the rotation while the primary was down: {left:#?}"
    );

    // The same data directory, crash recovery, the same port: the app is not
    // restarted and must find it again by itself. `start` returns only once the
    // server accepts connections, so a vote waiting for a connection may already
    // succeed before it returns: the outage ends when the restart begins.
    let restart_began = Instant::now();
    tokio::task::block_in_place(|| primary.start());
    let restarted_at = Instant::now();
    wait_for_calls(
        &load,
        "vote",
        restarted_at,
        Some(200),
        10,
        "votes after the restart",
    )
    .await;
    let outcomes = load.stop().await;
    eprintln!("{}", summary(test, &outcomes));

    // Reads never failed: the replica served them while the primary was dead.
    let reads_during: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.kind != "vote" && o.started > settled_at && o.finished() < restart_began)
        .collect();
    assert!(!reads_during.is_empty());
    assert!(
        replica_reads_during >= 200.0,
        "{test}: the replica served {replica_reads_during} reads during the outage"
    );
    assert_none_failed(test, &except(&outcomes, "vote"));

    let votes_of = |keep: &dyn Fn(&Outcome) -> bool| -> Vec<&Outcome> {
        outcomes
            .iter()
            .filter(|o| o.kind == "vote" && keep(o))
            .collect()
    };
    let before = votes_of(&|o| o.finished() < kill_started);
    let during = votes_of(&|o| o.started > killed_at && o.finished() < restart_began);
    let after = votes_of(&|o| o.started > restarted_at);
    assert!(unexpected(before.iter().copied()).is_empty(), "{before:#?}");
    assert!(!during.is_empty());
    for o in &during {
        assert_clean_503(test, o);
    }
    // Every vote that failed, failed cleanly and fast (the ones caught in
    // flight by the kill too: their connection was dropped, not silenced).
    let refused = unexpected(outcomes.iter().filter(|o| o.kind == "vote"));
    for o in &refused {
        assert_clean_503(test, o);
    }
    let slowest = max_elapsed(refused.iter().copied());
    // Writes started after the restart find the primary again: the pool
    // replaces its dead connections on checkout.
    let failed_after = unexpected(after.iter().copied());
    eprintln!(
        "[chaos] {test}: votes: {} before the kill (all 200), {} during the outage (all 503), \
         {} refused in all (slowest {slowest:?}), {} after the restart ({} not 200); \
         reads: {} in all, 0 failed, {} while the primary was down, {replica_reads_during} \
         served by the replica meanwhile (received but unreplayable: {unreplayable} bytes)",
        before.len(),
        during.len(),
        refused.len(),
        after.len(),
        failed_after.len(),
        outcomes.iter().filter(|o| o.kind != "vote").count(),
        reads_during.len(),
    );
    assert!(failed_after.is_empty(), "{test}: {failed_after:#?}");
    assert!(slowest < VOTE_REFUSAL, "{test}: a refusal took {slowest:?}");
    app.stop().await;
}

// ---------------------------------------------------------------------------
// Redis failures
// ---------------------------------------------------------------------------

/// Registers one account (before any fault) for the login load.
async fn register_account(app: &TestApp) -> String {
    let email = format!("chaos-{}@example.com", uuid::Uuid::new_v4().simple());
    let response = app
        .client
        .post(app.url("/api/v1/auth/register"))
        .json(&json!({"email": email, "password": PASSWORD, "display_name": "Chaos"}))
        .send()
        .await
        .expect("register");
    assert_eq!(response.status(), 201);
    email
}

/// Cities, correct logins and wrong-password logins.
async fn redis_calls(app: &TestApp) -> Vec<Call> {
    let email = register_account(app).await;
    let mut calls = read_calls(app).await;
    calls.truncate(2);
    calls.push(Call::Login {
        email: email.clone(),
        password: PASSWORD.to_owned(),
    });
    calls.push(Call::Login {
        email,
        password: "wrong password entirely".to_owned(),
    });
    calls
}

async fn decisions(app: &TestApp, backend: &str) -> f64 {
    app.metric("rate_limit_decisions_total", &[("backend", backend)])
        .await
}

async fn wait_for_decisions(app: &TestApp, backend: &str, n: f64, what: &str) {
    let target = decisions(app, backend).await + n;
    eventually(what, NOTICE, || async move {
        decisions(app, backend).await >= target
    })
    .await;
}

async fn redis_up(app: &TestApp) -> f64 {
    app.metric("dependency_up", &[("dependency", "redis")])
        .await
}

/// Load, `break_it`, degraded-but-ready, `heal`, Redis used again.
async fn redis_scenario(
    test: &str,
    app: &TestApp,
    break_it: impl FnOnce(),
    heal: impl FnOnce(),
) -> Vec<Outcome> {
    let load = Load::start(app, 8, redis_calls(app).await);
    wait_for_decisions(app, "redis", 10.0, "rate-limit decisions in Redis").await;

    break_it();
    let broken_at = Instant::now();
    let body = app
        .wait_for_ready("redis reported down", NOTICE, |b| {
            b["dependencies"]["redis"]["status"] == "down"
        })
        .await;
    assert_eq!(body["status"], "degraded", "{body}");
    let response = app.get("/ready").await;
    assert_eq!(response.status(), 200, "Redis down leaves the app ready");
    assert_eq!(redis_up(app).await, 0.0);
    wait_for_decisions(app, "local", 20.0, "local rate-limit decisions").await;
    load.settle(broken_at, "requests caught by the fault").await;
    load.run_for(100, "requests while Redis is unreachable")
        .await;

    heal();
    eventually("redis back up", NOTICE, || async move {
        redis_up(app).await == 1.0
    })
    .await;
    wait_for_decisions(app, "redis", 10.0, "rate-limit decisions in Redis again").await;
    let outcomes = load.stop().await;
    let during: Vec<&Outcome> = outcomes.iter().filter(|o| o.started > broken_at).collect();
    eprintln!(
        "{} (after the fault: max {:?}; decisions redis {}, local {})",
        summary(test, &outcomes),
        max_elapsed(during.iter().copied()),
        decisions(app, "redis").await,
        decisions(app, "local").await,
    );
    assert_none_failed(test, &outcomes);
    outcomes
}

/// For Redis faults: the cache on, with cities dropping out of L1 every second,
/// so reads keep going to Redis (L2) while it fails.
fn redis_builder() -> TestAppBuilder {
    chaos_builder().env("CACHE_TTL_CITIES", "1s,1m")
}

/// An app whose Redis is the shared one, reached through a proxy.
async fn app_with_proxied_redis() -> (TestApp, ChaosProxy) {
    let proxy = ChaosProxy::to_port(services().redis_port).await;
    let app = redis_builder()
        .env("REDIS_URL", &format!("redis://{}", proxy.addr()))
        .start()
        .await;
    (app, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_reads_survive_a_redis_cut_and_use_redis_again_after_heal() {
    let (app, proxy) = app_with_proxied_redis().await;
    redis_scenario(
        "login_and_reads_survive_a_redis_cut_and_use_redis_again_after_heal",
        &app,
        || proxy.cut(),
        || proxy.heal(),
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_redis_stalls_no_request_beyond_its_command_timeout() {
    let test = "a_blackholed_redis_stalls_no_request_beyond_its_command_timeout";
    let (app, proxy) = app_with_proxied_redis().await;
    let outcomes = redis_scenario(test, &app, || proxy.blackhole(), || proxy.heal()).await;
    // REDIS_RESPONSE_TIMEOUT is 250 ms and REDIS_CONNECT_TIMEOUT 500 ms: no
    // request may wait on Redis for much longer than that. Reads do nothing
    // else slow; logins also hash a password (a few hundred ms under load).
    let reads = outcomes
        .iter()
        .filter(|o| o.kind.ends_with("cities") || o.kind == "get-city");
    let slowest_read = max_elapsed(reads);
    assert!(
        slowest_read < Duration::from_secs(1),
        "{test}: a read took {slowest_read:?}"
    );
    let slowest = max_elapsed(&outcomes);
    assert!(slowest < FAIL_FAST, "{test}: a request took {slowest:?}");
    app.stop().await;
}

async fn cities_cache(app: &TestApp, layer: &str, result: &str) -> f64 {
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

async fn city_invalidations(app: &TestApp, origin: &str) -> f64 {
    app.metric(
        "cache_invalidations_total",
        &[("namespace", "cities"), ("origin", origin)],
    )
    .await
}

/// Renames city 1 in the database while `b` holds it in L1 (30 s TTL), then
/// invalidates the cities on `a`: `b` must serve the new name long before its
/// L1 copy expires, because `a`'s invalidation reached it over pub/sub.
///
/// A round in which `b` resubscribed (its subscription can be replaced when a
/// heartbeat ping is slow on a loaded machine, which drops its whole L1 as a
/// "resync") proves nothing about `a`'s message, so it is repeated.
async fn an_invalidation_on_a_reaches_b(a: &TestApp, b: &TestApp, name: &str) -> Duration {
    for round in 1..=3 {
        let name = format!("{name} {round}");
        let resyncs_before = city_invalidations(b, "resync").await;
        let remote_before = city_invalidations(b, "remote").await;
        let body = b.get("/api/v1/cities/1").await.text().await.expect("body");
        assert!(!body.contains(&name), "{body}");
        sqlx::query("UPDATE cities SET name = $1 WHERE id = 1")
            .bind(&name)
            .execute(a.state.db.write())
            .await
            .expect("rename");
        let stale = b.get("/api/v1/cities/1").await.text().await.expect("body");
        assert!(!stale.contains(&name), "b serves its L1 copy until told");

        a.state
            .cache
            .invalidate(refbackend::cache::Namespace::Cities)
            .await;
        let invalidated_at = Instant::now();
        let wanted = name.as_str();
        eventually(
            &format!("b serving {name:?}"),
            Duration::from_secs(5),
            || async move {
                let body = b.get("/api/v1/cities/1").await.text().await.expect("body");
                body.contains(wanted)
            },
        )
        .await;
        let took = invalidated_at.elapsed();
        if city_invalidations(b, "resync").await > resyncs_before {
            eprintln!("[chaos] b resubscribed during round {round}; repeating it");
            continue;
        }
        assert!(
            city_invalidations(b, "remote").await > remote_before,
            "b dropped its copy because of a's message"
        );
        return took;
    }
    panic!("b resubscribed in every round: its subscription keeps failing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_reads_l2_hits_and_invalidations_survive_a_real_redis_restart() {
    let test = "logins_reads_l2_hits_and_invalidations_survive_a_real_redis_restart";
    let redis = services().dedicated_redis();
    // Two instances on one database and one Redis, primary only (a lagging
    // replica would make "b serves fresh data" a question of replication).
    // `a` carries the load (cities drop out of its L1 every second, so it keeps
    // going to Redis); `b` keeps the default 30 s L1 TTL of cities.
    let a = redis_builder()
        .without_replica()
        .env("REDIS_URL", &redis.url())
        .start()
        .await;
    let b = chaos_builder()
        .without_replica()
        .unseeded()
        .env("REDIS_URL", &redis.url())
        .start_on(a.db.clone())
        .await;
    let redis_url = redis.url();
    let (url, first) = (redis_url.as_str(), &a);
    eventually("both instances subscribed", NOTICE, || async move {
        crate::support::invalidation_subscribers(url, first).await == 2
    })
    .await;
    let before = an_invalidation_on_a_reaches_b(&a, &b, "Before Restart City").await;

    redis_scenario(
        test,
        &a,
        || tokio::task::block_in_place(|| redis.kill()),
        || tokio::task::block_in_place(|| redis.start()),
    )
    .await;

    // Both subscribers came back by themselves, and `b` dropped its L1 when
    // it resubscribed (it may have missed messages).
    eventually("both instances subscribed again", NOTICE, || async move {
        crate::support::invalidation_subscribers(url, first).await == 2
    })
    .await;
    assert!(city_invalidations(&b, "resync").await >= 1.0);

    // L2 is used again: the restarted Redis is empty, so a city `a` loads now
    // is stored there, and `a` (once its 1 s L1 copy expires) and `b` (which
    // never read it) both get it from Redis.
    let (status, page) = a.get_json("/api/v1/cities?limit=3").await;
    assert_eq!(status, 200, "{page}");
    let city = page["items"][2]["id"].as_i64().expect("a third city");
    let path = format!("/api/v1/cities/{city}");
    let a_hits = cities_cache(&a, "l2", "hit").await;
    let city_path = path.as_str();
    eventually("L2 hits on a", NOTICE, || async move {
        assert_eq!(first.get(city_path).await.status(), 200);
        cities_cache(first, "l2", "hit").await > a_hits
    })
    .await;
    let b_hits = cities_cache(&b, "l2", "hit").await;
    assert_eq!(b.get(&path).await.status(), 200);
    assert_eq!(
        cities_cache(&b, "l2", "hit").await,
        b_hits + 1.0,
        "b got a's value from Redis"
    );

    // Cross-instance invalidation works again.
    let after = an_invalidation_on_a_reaches_b(&a, &b, "After Restart City").await;
    eprintln!(
        "[chaos] {test}: invalidation a -> b took {before:?} before the restart, {after:?} after; \
         l2 hits a {}, b {}; resyncs on b {}",
        cities_cache(&a, "l2", "hit").await,
        cities_cache(&b, "l2", "hit").await,
        city_invalidations(&b, "resync").await,
    );
    b.stop().await;
    a.stop().await;
}
